//! Accounts: password rules and hashing, session tokens, and login rate limits.
//!
//! Passwords are hashed with Argon2id and never logged; tokens are random 32-byte
//! values of which the server keeps only the SHA-256.

use crate::config::{Argon2Params, Limits};
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use confide_proto::{ErrorCode, Password, ProtoError, SessionToken, UserName};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Hashes and checks passwords with fixed Argon2id parameters.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// A valid hash of a random password, verified against when the user does not
    /// exist so that "no such user" takes as long as "wrong password".
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with these costs.
    ///
    /// # Errors
    /// If the parameters are out of Argon2's range.
    pub fn new(params: &Argon2Params) -> anyhow::Result<PasswordHasher> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|err| anyhow::anyhow!("invalid argon2 parameters: {err}"))?;
        let mut hasher = PasswordHasher {
            params,
            dummy_hash: String::new(),
        };
        let mut random = [0u8; 16];
        rand::rng().fill_bytes(&mut random);
        hasher.dummy_hash = hasher
            .hash(&Password(hex::encode(random)))
            .map_err(|err| anyhow::anyhow!("cannot hash: {err}"))?;
        Ok(hasher)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// The PHC string of a new hash of `password` with a random salt.
    ///
    /// # Errors
    /// If hashing fails (it does not for valid parameters).
    pub fn hash(&self, password: &Password) -> Result<String, argon2::password_hash::Error> {
        let mut salt_bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut salt_bytes);
        let salt = SaltString::encode_b64(&salt_bytes)?;
        Ok(self
            .argon2()
            .hash_password(password.0.as_bytes(), &salt)?
            .to_string())
    }

    /// Whether `password` matches `stored` (a PHC string); `None` checks against a dummy
    /// hash and always fails, taking the same time.
    #[must_use]
    pub fn verify(&self, password: &Password, stored: Option<&str>) -> bool {
        let (hash, real) = match stored {
            Some(hash) => (hash, true),
            None => (self.dummy_hash.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let matches = self
            .argon2()
            .verify_password(password.0.as_bytes(), &parsed)
            .is_ok();
        real && matches
    }
}

/// Checks a new password against the rules.
///
/// # Errors
/// [`ErrorCode::WeakPassword`] with the rule it breaks.
pub fn check_new_password(username: &UserName, password: &Password) -> Result<(), ProtoError> {
    let chars = password.0.chars().count();
    if chars < Password::MIN_CHARS {
        return Err(ProtoError::new(
            ErrorCode::WeakPassword,
            format!(
                "password must have at least {} characters",
                Password::MIN_CHARS
            ),
        ));
    }
    if password.0.len() > Password::MAX_BYTES {
        return Err(ProtoError::new(
            ErrorCode::WeakPassword,
            format!("password must have at most {} bytes", Password::MAX_BYTES),
        ));
    }
    if password.0.to_lowercase() == username.as_str().to_lowercase() {
        return Err(ProtoError::new(
            ErrorCode::WeakPassword,
            "password must not be the username",
        ));
    }
    Ok(())
}

/// A fresh random session token and the hash the server stores.
#[must_use]
pub fn new_token() -> (SessionToken, [u8; 32]) {
    let mut bytes = vec![0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = SessionToken(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

/// What the server stores for a token.
#[must_use]
pub fn token_hash(token: &SessionToken) -> [u8; 32] {
    Sha256::digest(&token.0).into()
}

/// Sliding-window limits on login attempts, per account and per address.
///
/// A `std::sync::Mutex` is enough: each check touches two small map entries and never
/// awaits while holding the lock.
#[derive(Debug)]
pub struct LoginLimiter {
    window: Duration,
    per_account: u32,
    per_address: u32,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    account_failures: HashMap<String, VecDeque<Instant>>,
    address_attempts: HashMap<IpAddr, VecDeque<Instant>>,
}

/// Past this many tracked keys, stale ones are swept on the next check.
const SWEEP_THRESHOLD: usize = 10_000;

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|first| now.duration_since(*first) >= window)
    {
        times.pop_front();
    }
}

fn retry_after(times: &VecDeque<Instant>, now: Instant, window: Duration) -> Duration {
    times.front().map_or(Duration::ZERO, |first| {
        window.saturating_sub(now.duration_since(*first))
    })
}

impl LoginLimiter {
    /// A limiter with the configured limits.
    #[must_use]
    pub fn new(limits: &Limits) -> LoginLimiter {
        LoginLimiter {
            window: Duration::from_secs(limits.login_window_secs),
            per_account: limits.login_failures_per_account,
            per_address: limits.login_attempts_per_address,
            state: Mutex::new(LimiterState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an attempt from `address` for `account` (its canonical name, if any) and
    /// says whether it may go ahead.
    ///
    /// # Errors
    /// [`ErrorCode::RateLimited`] with how long to wait.
    pub fn check(
        &self,
        address: IpAddr,
        account: Option<&str>,
        now: Instant,
    ) -> Result<(), ProtoError> {
        let window = self.window;
        let mut state = self.state();
        if state.address_attempts.len() + state.account_failures.len() > SWEEP_THRESHOLD {
            state.address_attempts.retain(|_, times| {
                prune(times, now, window);
                !times.is_empty()
            });
            state.account_failures.retain(|_, times| {
                prune(times, now, window);
                !times.is_empty()
            });
        }
        if let Some(account) = account
            && let Some(times) = state.account_failures.get_mut(account)
        {
            prune(times, now, window);
            if times.len() >= self.per_account as usize {
                let wait = retry_after(times, now, window);
                return Err(limited("this account", wait));
            }
        }
        let times = state.address_attempts.entry(address).or_default();
        prune(times, now, window);
        if times.len() >= self.per_address as usize {
            let wait = retry_after(times, now, window);
            return Err(limited("this address", wait));
        }
        times.push_back(now);
        Ok(())
    }

    /// Records a failed login for `account`.
    pub fn failed(&self, account: &str, now: Instant) {
        let mut state = self.state();
        let times = state
            .account_failures
            .entry(account.to_owned())
            .or_default();
        prune(times, now, self.window);
        times.push_back(now);
    }

    /// Clears an account's failures after a successful login.
    pub fn succeeded(&self, account: &str) {
        self.state().account_failures.remove(account);
    }
}

fn limited(what: &str, wait: Duration) -> ProtoError {
    ProtoError::new(
        ErrorCode::RateLimited,
        format!(
            "too many login attempts for {what}; try again in {} s",
            wait.as_secs().max(1)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(&Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[test]
    fn hash_and_verify() {
        let hasher = cheap();
        let password = Password("correct horse".to_owned());
        let hash = hasher.hash(&password).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher.verify(&password, Some(&hash)));
        assert!(!hasher.verify(&Password("wrong horse".to_owned()), Some(&hash)));
        assert!(!hasher.verify(&password, None));
        assert!(!hasher.verify(&password, Some("not a hash")));
        assert_ne!(hash, hasher.hash(&password).unwrap(), "salts differ");
    }

    #[test]
    fn password_rules() {
        let alice = UserName::parse("alice").unwrap();
        let weak = |raw: &str| {
            check_new_password(&alice, &Password(raw.to_owned()))
                .unwrap_err()
                .code
        };
        assert_eq!(weak("short"), ErrorCode::WeakPassword);
        assert_eq!(weak(&"x".repeat(2000)), ErrorCode::WeakPassword);
        assert!(
            check_new_password(
                &UserName::parse("alice1234").unwrap(),
                &Password("ALICE1234".into())
            )
            .is_err()
        );
        assert!(check_new_password(&alice, &Password("long enough".into())).is_ok());
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (first, first_hash) = new_token();
        let (second, _) = new_token();
        assert_ne!(first, second);
        assert_eq!(token_hash(&first), first_hash);
        assert_eq!(first.0.len(), 32);
    }

    #[test]
    fn limiter_blocks_per_account_and_per_address() {
        let limits = Limits {
            login_failures_per_account: 3,
            login_attempts_per_address: 5,
            login_window_secs: 60,
            ..Limits::default()
        };
        let limiter = LoginLimiter::new(&limits);
        let start = Instant::now();
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            limiter.check(one, Some("alice"), start).unwrap();
            limiter.failed("alice", start);
        }
        let err = limiter.check(two, Some("alice"), start).unwrap_err();
        assert_eq!(err.code, ErrorCode::RateLimited);
        assert!(err.message.contains("this account"));
        limiter.check(two, Some("bob"), start).unwrap();
        // After the window the account may try again.
        limiter
            .check(two, Some("alice"), start + Duration::from_secs(61))
            .unwrap();
        // Per address: five attempts, then refused.
        let three: IpAddr = "127.0.0.3".parse().unwrap();
        for _ in 0..5 {
            limiter.check(three, None, start).unwrap();
        }
        assert!(
            limiter
                .check(three, None, start)
                .unwrap_err()
                .message
                .contains("this address")
        );
        limiter.succeeded("alice");
        limiter.check(one, Some("alice"), start).unwrap();
    }
}
