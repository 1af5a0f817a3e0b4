//! Agent sign-in by device code (OAuth 2.0 Device Authorization Grant, RFC 8628), the console's
//! side: pending requests, user codes, approval or denial by an administrator, polling with
//! `slow_down`, expiry.
//!
//! No HTTP here (`web::device` serves the endpoints and the approval page) and no database: the
//! requests live in memory for minutes, and a console restart only makes the agent start again.
//! What an approved agent receives is a fresh one-use enrollment token, created (and audited) by
//! the approver; the agent then enrolls with it as with a token pasted on the command line.

use crate::auth::tokens;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// RFC 8628 §6.1: a short code from an alphabet without vowels (no words) and without look-alikes.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Anonymous callers can open requests; this bounds the memory they can take.
const MAX_PENDING: usize = 1_000;
/// Pending requests from one address, so one caller cannot fill the approval queue.
const MAX_PENDING_PER_ADDRESS: usize = 20;

/// What the agent asked for, shown on the approval page.
#[derive(Debug, Clone)]
pub struct DeviceRequest {
    pub user_code: String,
    pub machine_name: String,
    pub address: String,
    pub requested_at_ms: i64,
}

#[derive(Debug, Clone)]
enum Decision {
    Pending,
    Approved { enrollment_token: String },
    Denied,
}

#[derive(Debug)]
struct Flow {
    request: DeviceRequest,
    expires: Instant,
    interval: Duration,
    last_poll: Option<Instant>,
    decision: Decision,
}

/// Answer to the agent's device authorization request.
#[derive(Debug, Clone)]
pub struct Started {
    pub device_code: String,
    pub user_code: String,
    pub expires_in: Duration,
    pub interval: Duration,
}

/// The token endpoint's answers (RFC 8628 §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Approved: the enrollment token, handed out once.
    Approved(String),
    Pending,
    SlowDown,
    Denied,
    Expired,
    /// Unknown or already used device code.
    Invalid,
}

/// An administrator's lookup of a user code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found,
    NotFound,
    AlreadyDecided,
}

/// The pending device requests of one console.
#[derive(Debug)]
pub struct DeviceFlows {
    lifetime: Duration,
    interval: Duration,
    /// Keyed by the SHA-256 of the device code (a secret the agent holds).
    flows: Mutex<HashMap<Vec<u8>, Flow>>,
}

/// Upper case, without separators, so `bcdf-ghjk`, `BCDF GHJK` and `BCDFGHJK` are one code.
pub fn normalize_user_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn new_user_code() -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    let chars: String = (0..8)
        .map(|_| USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())] as char)
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

impl DeviceFlows {
    pub fn new(lifetime: Duration, interval: Duration) -> Self {
        DeviceFlows {
            lifetime,
            interval,
            flows: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Flow>> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a request for `machine_name`; `None` when too many are pending, overall or from
    /// `address`.
    pub fn start(&self, machine_name: &str, address: &str, now_ms: i64) -> Option<Started> {
        let now = Instant::now();
        let mut flows = self.lock();
        // Expired requests linger a little so a late poll still learns "expired", then go.
        flows.retain(|_, f| f.expires + self.lifetime > now);
        let from_address = flows
            .values()
            .filter(|f| f.request.address == address && f.expires > now)
            .count();
        if flows.len() >= MAX_PENDING || from_address >= MAX_PENDING_PER_ADDRESS {
            return None;
        }
        let device_code = tokens::generate("hsdc_");
        let mut user_code = new_user_code();
        while flows.values().any(|f| f.request.user_code == user_code) {
            user_code = new_user_code();
        }
        flows.insert(
            tokens::digest(&device_code),
            Flow {
                request: DeviceRequest {
                    user_code: user_code.clone(),
                    machine_name: machine_name.to_string(),
                    address: address.to_string(),
                    requested_at_ms: now_ms,
                },
                expires: now + self.lifetime,
                interval: self.interval,
                last_poll: None,
                decision: Decision::Pending,
            },
        );
        Some(Started {
            device_code,
            user_code,
            expires_in: self.lifetime,
            interval: self.interval,
        })
    }

    /// The pending request with this user code, for the approval page.
    pub fn find(&self, user_code: &str) -> (Lookup, Option<DeviceRequest>) {
        let wanted = normalize_user_code(user_code);
        let now = Instant::now();
        let flows = self.lock();
        match flows
            .values()
            .find(|f| normalize_user_code(&f.request.user_code) == wanted && f.expires > now)
        {
            None => (Lookup::NotFound, None),
            Some(f) if matches!(f.decision, Decision::Pending) => {
                (Lookup::Found, Some(f.request.clone()))
            }
            Some(f) => (Lookup::AlreadyDecided, Some(f.request.clone())),
        }
    }

    /// Records an administrator's decision. `enrollment_token` is `Some` to approve (the token
    /// the agent will receive) and `None` to deny. Returns false when the code is unknown, expired
    /// or already decided.
    pub fn decide(&self, user_code: &str, enrollment_token: Option<String>) -> bool {
        let wanted = normalize_user_code(user_code);
        let now = Instant::now();
        let mut flows = self.lock();
        let Some(flow) = flows.values_mut().find(|f| {
            normalize_user_code(&f.request.user_code) == wanted
                && f.expires > now
                && matches!(f.decision, Decision::Pending)
        }) else {
            return false;
        };
        flow.decision = match enrollment_token {
            Some(token) => Decision::Approved {
                enrollment_token: token,
            },
            None => Decision::Denied,
        };
        true
    }

    /// The agent's poll of the token endpoint.
    pub fn poll(&self, device_code: &str) -> Poll {
        let key = tokens::digest(device_code);
        let now = Instant::now();
        let mut flows = self.lock();
        let Some(flow) = flows.get_mut(&key) else {
            return Poll::Invalid;
        };
        if flow.expires <= now {
            flows.remove(&key);
            return Poll::Expired;
        }
        // RFC 8628 §3.5: polling faster than the interval gets slow_down, and the interval grows
        // by 5 seconds for the rest of this request.
        let too_fast = flow
            .last_poll
            .is_some_and(|last| now.duration_since(last) < flow.interval);
        flow.last_poll = Some(now);
        if too_fast {
            flow.interval += Duration::from_secs(5);
            return Poll::SlowDown;
        }
        match flow.decision.clone() {
            Decision::Pending => Poll::Pending,
            Decision::Denied => {
                flows.remove(&key);
                Poll::Denied
            }
            Decision::Approved { enrollment_token } => {
                flows.remove(&key);
                Poll::Approved(enrollment_token)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approve_hands_the_token_out_once() {
        let flows = DeviceFlows::new(Duration::from_secs(60), Duration::ZERO);
        let started = flows.start("dc01", "127.0.0.1", 0).unwrap();
        assert!(started.user_code.len() == 9 && started.user_code.as_bytes()[4] == b'-');
        assert_eq!(flows.poll(&started.device_code), Poll::Pending);
        let (lookup, req) = flows.find(&started.user_code.to_lowercase().replace('-', " "));
        assert_eq!(lookup, Lookup::Found);
        assert_eq!(req.unwrap().machine_name, "dc01");
        assert!(flows.decide(&started.user_code, Some("hset_x".into())));
        assert!(!flows.decide(&started.user_code, None), "decided once");
        assert_eq!(
            flows.poll(&started.device_code),
            Poll::Approved("hset_x".into())
        );
        assert_eq!(flows.poll(&started.device_code), Poll::Invalid);
        assert_eq!(flows.poll("hsdc_unknown"), Poll::Invalid);
    }

    #[test]
    fn one_address_cannot_fill_the_queue() {
        let flows = DeviceFlows::new(Duration::from_secs(60), Duration::ZERO);
        for i in 0..MAX_PENDING_PER_ADDRESS {
            assert!(flows.start(&format!("m{i}"), "192.0.2.1", 0).is_some());
        }
        assert!(flows.start("one-more", "192.0.2.1", 0).is_none());
        assert!(flows.start("elsewhere", "192.0.2.2", 0).is_some());
    }

    #[test]
    fn deny_slow_down_and_expiry() {
        let flows = DeviceFlows::new(Duration::from_secs(60), Duration::from_secs(3600));
        let started = flows.start("dc02", "127.0.0.1", 0).unwrap();
        assert_eq!(flows.poll(&started.device_code), Poll::Pending);
        assert_eq!(flows.poll(&started.device_code), Poll::SlowDown);
        let fast = DeviceFlows::new(Duration::from_secs(60), Duration::ZERO);
        let s = fast.start("dc03", "127.0.0.1", 0).unwrap();
        assert!(fast.decide(&s.user_code, None));
        assert_eq!(fast.poll(&s.device_code), Poll::Denied);
        let expired = DeviceFlows::new(Duration::ZERO, Duration::ZERO);
        let s = expired.start("dc04", "127.0.0.1", 0).unwrap();
        assert_eq!(expired.find(&s.user_code).0, Lookup::NotFound);
        assert!(!expired.decide(&s.user_code, Some("t".into())));
        assert_eq!(expired.poll(&s.device_code), Poll::Expired);
    }
}
