//! Unary calls for the load, on one HTTP/2 connection per handle: the h2 crate on tokio, with
//! keel-api's message types and gRPC framing. A request's message and its end of stream go
//! out in one DATA frame, and the requests queued on a connection meanwhile in one write.
//! Streams (watch, lease keep-alive) go through etcd-client instead.
//!
//! Why not etcd-client for these too: the client shares the machine with the server under
//! test, so every microsecond of CPU it spends per request is taken from the server. Through
//! tonic's channel (a tower buffer task, hyper's client dispatch) a 64-client put cost the
//! client ~28 us of CPU; on h2 directly it costs ~15 us, and both etcd and Keel serve more
//! (etcd +15%, Keel +24% in the run that decided it). A load generator should measure the
//! server, not itself.

use bytes::Bytes;
use h2::client::SendRequest;
use http::header::{CONTENT_TYPE, TE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method as HttpMethod, Request, Uri};
use keel_api::grpc::{decode, frame, FrameDecoder, Method};
use std::time::Duration;
use tokio::net::TcpStream;

use crate::coalesce::Coalescing;

/// The largest response message accepted (etcd's default client limit is unbounded; this
/// only guards the bench against a runaway answer).
const MAX_RESPONSE: usize = 64 << 20;

/// One HTTP/2 connection to one endpoint; clones share it.
#[derive(Clone)]
pub struct Connection {
    send: SendRequest<Bytes>,
    authority: Authority,
}

impl Connection {
    /// Connects to `endpoint` (`host:port`, with or without `http://`).
    pub async fn open(endpoint: &str, timeout: Duration) -> Result<Connection, String> {
        let address = endpoint.strip_prefix("http://").unwrap_or(endpoint).trim_end_matches('/');
        let authority: Authority = address.parse().map_err(|e| format!("endpoint {endpoint}: {e}"))?;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| format!("connecting to {endpoint}: timed out"))?
            .map_err(|e| format!("connecting to {endpoint}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, connection) = h2::client::handshake(Coalescing::new(tcp))
            .await
            .map_err(|e| format!("HTTP/2 handshake with {endpoint}: {e}"))?;
        tokio::spawn(async move {
            // Ends when the server closes the connection; calls on it then fail and count as errors.
            let _ = connection.await;
        });
        Ok(Connection { send, authority })
    }

    /// Calls `method` with `request`; a status other than OK is an error naming it.
    pub async fn call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        method: Method,
        request: &Req,
    ) -> Result<Resp, String> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::from_static(method.path()))
            .build()
            .map_err(|e| e.to_string())?;
        let mut head = Request::new(());
        *head.method_mut() = HttpMethod::POST;
        *head.uri_mut() = uri;
        head.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        head.headers_mut().insert(TE, HeaderValue::from_static("trailers"));

        let mut send = self.send.clone().ready().await.map_err(|e| e.to_string())?;
        let (response, mut body_out) = send.send_request(head, false).map_err(|e| e.to_string())?;
        body_out.send_data(Bytes::from(frame(request)), true).map_err(|e| e.to_string())?;
        let response = response.await.map_err(|e| e.to_string())?;
        let (parts, mut body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(format!("HTTP status {}", parts.status));
        }
        // A call that fails at once answers with its status in the headers ("trailers-only").
        check_status(&parts.headers)?;
        let mut messages = FrameDecoder::new(MAX_RESPONSE);
        while let Some(data) = body.data().await {
            let data = data.map_err(|e| e.to_string())?;
            messages.push(&data);
            let _ = body.flow_control().release_capacity(data.len());
        }
        let trailers = body.trailers().await.map_err(|e| e.to_string())?.unwrap_or_default();
        check_status(&trailers)?;
        let message = messages.next_message().map_err(|s| s.message)?.ok_or("the call ended without a message")?;
        decode(&message).map_err(|s| s.message)
    }
}

/// An error for a `grpc-status` other than 0 in `headers`.
fn check_status(headers: &HeaderMap) -> Result<(), String> {
    match headers.get("grpc-status").map(HeaderValue::as_bytes) {
        None | Some(b"0") => Ok(()),
        Some(code) => {
            let message = headers.get("grpc-message").map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned());
            Err(format!("grpc status {}: {}", String::from_utf8_lossy(code), message.unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_api::etcdserverpb::{PutRequest, PutResponse, ResponseHeader};
    use tokio::net::TcpListener;

    /// Serves one connection: a put of key `ok` gets a response with revision 7; any other
    /// key gets etcd's "key is not provided" as a trailers-only answer.
    async fn serve_one(listener: TcpListener) {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut connection = h2::server::handshake(tcp).await.unwrap();
        while let Some(Ok((request, mut respond))) = connection.accept().await {
            tokio::spawn(async move {
                assert_eq!(request.uri().path(), "/etcdserverpb.KV/Put");
                let mut body = request.into_body();
                let mut messages = FrameDecoder::new(1 << 20);
                while let Some(data) = body.data().await {
                    messages.push(&data.unwrap());
                }
                let put: PutRequest = decode(&messages.next_message().unwrap().unwrap()).unwrap();
                let mut head = http::Response::new(());
                head.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                let mut trailers = HeaderMap::new();
                if put.key == b"ok" {
                    let mut out = respond.send_response(head, false).unwrap();
                    let answer = PutResponse {
                        header: Some(ResponseHeader { revision: 7, ..Default::default() }),
                        prev_kv: None,
                    };
                    out.send_data(Bytes::from(frame(&answer)), false).unwrap();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    out.send_trailers(trailers).unwrap();
                } else {
                    head.headers_mut().insert("grpc-status", HeaderValue::from_static("3"));
                    head.headers_mut()
                        .insert("grpc-message", HeaderValue::from_static("etcdserver: key is not provided"));
                    respond.send_response(head, true).unwrap();
                }
            });
        }
    }

    #[tokio::test]
    async fn a_call_returns_the_answer_or_the_status_that_failed_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve_one(listener));
        let conn = Connection::open(&endpoint, Duration::from_secs(5)).await.unwrap();

        let put = |key: &str| PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() };
        let answer: PutResponse = conn.call(Method::Put, &put("ok")).await.unwrap();
        assert_eq!(answer.header.unwrap().revision, 7);
        let failed = conn.call::<_, PutResponse>(Method::Put, &put("")).await.unwrap_err();
        assert_eq!(failed, "grpc status 3: etcdserver: key is not provided");
    }
}
