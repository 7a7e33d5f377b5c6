//! HTTP/1.1 beside gRPC on the client port: `/health`, `/version`, `/metrics`, and etcd's
//! JSON gateway (see [`gateway`](super::gateway)).

use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method as HttpMethod, Request, Response, StatusCode};

use super::gateway::{self, HttpBody};
use super::grpc::{Shared, CLUSTER_VERSION, SERVER_VERSION};
use crate::Request as NodeRequest;

/// A complete HTTP response.
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Healthy when the member knows a leader and a linearizable read goes through, as etcd's
/// `/health` checks.
async fn health(ctx: &Shared) -> Response<Full<Bytes>> {
    let has_leader = matches!(ctx.node.status().await, Ok(s) if s.raft.leader != 0);
    let read = NodeRequest::Range(keel_storage::mvcc::RangeRequest {
        key: b"health".to_vec(),
        limit: 1,
        ..Default::default()
    });
    let healthy = has_leader && ctx.node.call(read, None).await.is_ok();
    let (status, body) = match healthy {
        true => (StatusCode::OK, r#"{"health":"true"}"#),
        false => (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#),
    };
    reply(status, "application/json", body)
}

/// Serves one HTTP/1.1 request.
pub async fn handle(request: Request<Incoming>, ctx: Rc<Shared>) -> Result<Response<HttpBody>, Infallible> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let whole = match (method, path.as_str()) {
        (HttpMethod::GET, "/health") => health(&ctx).await,
        (HttpMethod::GET, "/version") => {
            let versions = format!(r#"{{"etcdserver":"{SERVER_VERSION}","etcdcluster":"{CLUSTER_VERSION}"}}"#);
            reply(StatusCode::OK, "application/json", versions)
        }
        (HttpMethod::GET, "/metrics") => match ctx.node.status().await {
            Ok(status) => reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ctx.metrics.render(&status),
            ),
            Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", e.to_string()),
        },
        (HttpMethod::POST, path) if path.starts_with("/v3/") || path.starts_with("/v3beta/") => {
            let limit = ctx.max_request + 512 * 1024;
            match http_body_util::Limited::new(request.into_body(), limit).collect().await {
                Ok(body) => return Ok(gateway::handle(path, &body.to_bytes(), &ctx).await),
                Err(e) => reply(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", e.to_string()),
            }
        }
        // The gateway's routes take POST only, as etcd's.
        (_, path) if gateway::serves(path) => {
            reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "Method Not Allowed\n")
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "404 page not found\n"),
    };
    Ok(whole.map(gateway::boxed))
}
