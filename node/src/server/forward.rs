//! Requests a follower forwards to the leader over the peer transport: the lease calls only
//! the leader can answer (keep-alive and time-to-live; etcd forwards them the same way), so
//! a client may send them to any member.

use keel_api::EtcdError;

use crate::{Reply, Request, Response};

/// A forwarded lease call.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseCall {
    /// Lease id.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Time-to-live query (keep-alive otherwise).
    #[prost(bool, tag = "2")]
    pub time_to_live: bool,
    /// With the attached keys (time-to-live only).
    #[prost(bool, tag = "3")]
    pub keys: bool,
}

/// The leader's answer to a [`LeaseCall`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseAnswer {
    /// etcd's error message, empty on success.
    #[prost(string, tag = "1")]
    pub error: String,
    /// Header revision.
    #[prost(int64, tag = "2")]
    pub revision: i64,
    /// Seconds to live.
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    /// Seconds granted (time-to-live only).
    #[prost(int64, tag = "4")]
    pub granted_ttl: i64,
    /// Attached keys (time-to-live with keys only).
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub keys: Vec<Vec<u8>>,
}

/// The forwardable form of `request`, if it is one only the leader answers.
pub fn lease_call(request: &Request) -> Option<LeaseCall> {
    match *request {
        Request::LeaseKeepAlive { id } => Some(LeaseCall { id, time_to_live: false, keys: false }),
        Request::LeaseTimeToLive { id, keys } => Some(LeaseCall { id, time_to_live: true, keys }),
        _ => None,
    }
}

impl LeaseCall {
    /// The request the leader runs.
    pub fn request(&self) -> Request {
        if self.time_to_live {
            Request::LeaseTimeToLive { id: self.id, keys: self.keys }
        } else {
            Request::LeaseKeepAlive { id: self.id }
        }
    }
}

impl LeaseAnswer {
    /// Encodes the leader's result.
    pub fn new(result: &Result<Reply, EtcdError>) -> LeaseAnswer {
        match result {
            Err(e) => LeaseAnswer { error: e.to_string(), ..LeaseAnswer::default() },
            Ok(reply) => {
                let revision = reply.revision;
                match &reply.response {
                    Response::LeaseKeepAlive { ttl, .. } => {
                        LeaseAnswer { revision, ttl: *ttl, ..LeaseAnswer::default() }
                    }
                    Response::LeaseTimeToLive { ttl, granted_ttl, keys, .. } => LeaseAnswer {
                        revision,
                        ttl: *ttl,
                        granted_ttl: *granted_ttl,
                        keys: keys.clone(),
                        ..LeaseAnswer::default()
                    },
                    other => LeaseAnswer {
                        error: format!("unexpected answer to a forwarded lease call: {other:?}"),
                        ..LeaseAnswer::default()
                    },
                }
            }
        }
    }

    /// The result of `call` as the follower's client sees it.
    pub fn result(self, call: &LeaseCall) -> Result<Reply, EtcdError> {
        if !self.error.is_empty() {
            return Err(EtcdError::from_message(&self.error).unwrap_or_else(|| {
                tracing::warn!("forwarded lease call failed: {}", self.error);
                EtcdError::Stopped
            }));
        }
        let response = if call.time_to_live {
            Response::LeaseTimeToLive { id: call.id, ttl: self.ttl, granted_ttl: self.granted_ttl, keys: self.keys }
        } else {
            Response::LeaseKeepAlive { id: call.id, ttl: self.ttl }
        };
        Ok(Reply { revision: self.revision, response })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip() {
        let call = lease_call(&Request::LeaseTimeToLive { id: 5, keys: true }).unwrap();
        assert_eq!(call.request(), Request::LeaseTimeToLive { id: 5, keys: true });
        let reply = Reply {
            revision: 9,
            response: Response::LeaseTimeToLive { id: 5, ttl: 3, granted_ttl: 10, keys: vec![b"k".to_vec()] },
        };
        assert_eq!(LeaseAnswer::new(&Ok(reply.clone())).result(&call), Ok(reply));
        let keep_alive = lease_call(&Request::LeaseKeepAlive { id: 5 }).unwrap();
        let err = LeaseAnswer::new(&Err(EtcdError::LeaseNotFound));
        assert_eq!(err.result(&keep_alive), Err(EtcdError::LeaseNotFound));
        assert!(lease_call(&Request::LeaseLeases).is_none());
    }
}
