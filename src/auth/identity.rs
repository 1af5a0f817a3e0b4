//! How people and agents prove who they are to the console, beyond passwords and tokens: the
//! sign-in throttle, the optional OpenID Connect provider, whether local sign-in is allowed, and the
//! pending agent sign-ins by device code.
//! One value of [`Identity`] lives in the application state.

use super::device::DeviceFlows;
use super::oidc::Oidc;
use super::throttle::{Limits, SignInThrottle};

#[derive(Debug)]
pub struct Identity {
    pub throttle: SignInThrottle,
    /// The self-service portal's (`/my`): synced users, counted apart from console accounts.
    pub self_service_throttle: SignInThrottle,
    /// Set when `serve --oidc-issuer …` is given.
    pub oidc: Option<Oidc>,
    /// False with `serve --disable-local-sign-in`: only the OpenID Connect provider signs people in.
    pub local_sign_in: bool,
    /// Cookies carry `Secure` when the console is reached over HTTPS.
    pub secure_cookies: bool,
    /// Agents waiting for an administrator to approve their device code.
    pub device: DeviceFlows,
}

impl Identity {
    pub fn new(
        oidc: Option<Oidc>,
        local_sign_in: bool,
        secure_cookies: bool,
        device: DeviceFlows,
    ) -> Self {
        Identity {
            device,
            throttle: SignInThrottle::new(Limits::default()),
            self_service_throttle: SignInThrottle::new(Limits::default()),
            oidc,
            local_sign_in,
            secure_cookies,
        }
    }
}
