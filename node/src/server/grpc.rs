//! The gRPC endpoint: HTTP/2 requests to etcd's RPC paths, answered with gRPC framing and
//! status trailers.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use keel_api::grpc::{frame_encoded, FrameDecoder, Method, Status, Streaming};
use keel_api::Code;

use super::actor::NodeHandle;
use crate::service;

/// A gRPC response body: at most one message, then the status trailers.
pub struct GrpcBody {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers.is_none()
    }
}

fn status_headers(status: &Status, headers: &mut HeaderMap) {
    headers.insert("grpc-status", HeaderValue::from_str(&status.code_header()).expect("digits"));
    if !status.message.is_empty() {
        let message = HeaderValue::from_str(&status.message_header()).expect("percent-encoded ASCII");
        headers.insert("grpc-message", message);
    }
}

fn response(body: GrpcBody) -> Response<GrpcBody> {
    let mut response = Response::new(body);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// A failed call: no message, then the status trailers.
fn failure(status: Status) -> Response<GrpcBody> {
    let mut trailers = HeaderMap::new();
    status_headers(&status, &mut trailers);
    response(GrpcBody { message: None, trailers: Some(trailers) })
}

fn success(message: Vec<u8>) -> Response<GrpcBody> {
    let mut trailers = HeaderMap::new();
    status_headers(&Status::ok(), &mut trailers);
    response(GrpcBody { message: Some(Bytes::from(frame_encoded(&message))), trailers: Some(trailers) })
}

/// Serves one HTTP/2 request.
pub async fn handle(
    request: Request<Incoming>,
    node: NodeHandle,
    max_message: usize,
) -> Result<Response<GrpcBody>, Infallible> {
    let path = request.uri().path().to_string();
    let Some(method) = Method::from_path(&path) else {
        return Ok(failure(Status::new(Code::Unimplemented, format!("unknown method {path}"))));
    };
    if method.streaming() != Streaming::Unary {
        return Ok(failure(Status::new(Code::Unimplemented, format!("{path} is not supported yet"))));
    }
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Ok(failure(Status::new(Code::Internal, format!("reading the request: {e}")))),
    };
    let mut decoder = FrameDecoder::new(max_message);
    decoder.push(&body);
    let message = match decoder.next_message() {
        Ok(Some(message)) => message,
        Ok(None) => return Ok(failure(Status::new(Code::InvalidArgument, "grpc: request has no message"))),
        Err(status) => return Ok(failure(status)),
    };
    let request = match service::unary_request(method, &message) {
        Some(Ok(request)) => request,
        Some(Err(status)) => return Ok(failure(status)),
        None => return Ok(failure(Status::new(Code::Unimplemented, format!("{path} is not supported yet")))),
    };
    let answer = match node.call(request).await {
        Ok(reply) => service::unary_response(&reply, &node.header_info()),
        Err(e) => Err(Status::from(&e)),
    };
    Ok(match answer {
        Ok(message) => success(message),
        Err(status) => failure(status),
    })
}
