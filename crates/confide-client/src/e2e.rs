//! End-to-end identity on the server: publishing this device (its signed device list
//! and a stock of KeyPackages) and checking other users' identities (safety numbers).

use crate::error::ClientError;
use crate::handle::ClientHandle;
use crate::keys::{E2eState, KeyStore, KeyStoreError};
use confide_crypto::safety::SafetyNumber;
use confide_crypto::{SignedDeviceList, TrustChange};
use confide_proto::{DeviceId, IdentityBundle, Reply, Request, UserName};
use std::sync::{Mutex, PoisonError};

/// One-time KeyPackages kept on the server per device; topped up below half of it.
pub const KEY_PACKAGE_STOCK: u32 = 50;

/// Why an end-to-end operation failed.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// The keys in the profile could not be read or written.
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    /// The server refused or did not answer.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Cryptography failed.
    #[error(transparent)]
    Crypto(#[from] confide_crypto::CryptoError),
    /// The user has never set up end-to-end encryption.
    #[error("{0} has not set up end-to-end encryption yet (they need to log in once)")]
    NoIdentity(UserName),
    /// The user's published identity does not check out.
    #[error("the identity {user} published is invalid: {reason}")]
    BadIdentity {
        /// Whose.
        user: UserName,
        /// Why.
        reason: confide_crypto::IdentityError,
    },
    /// The server answered with something else than expected.
    #[error("unexpected reply from the server to {0}")]
    Unexpected(&'static str),
}

/// The device's keys, loaded from the profile, and the operations on them.
#[derive(Debug)]
pub struct Encryption {
    store: KeyStore,
    state: Mutex<E2eState>,
}

/// What `verify` shows about another user.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The user.
    pub user: UserName,
    /// The safety number of the two identities.
    pub safety_number: SafetyNumber,
    /// Whether the user was verified before (for the identity key pinned now).
    pub verified: bool,
    /// Whether their identity key changed since first contact and was not verified
    /// again since (warn loudly).
    pub key_changed: bool,
    /// What changed since the last look.
    pub change: TrustChange,
}

impl Encryption {
    /// Loads the device keys of the handle's user on its server (creating them the
    /// first time).
    ///
    /// # Errors
    /// If the profile's keys cannot be opened (wrong passphrase, altered files).
    pub fn open(handle: &ClientHandle) -> Result<Encryption, E2eError> {
        let user = handle.user().username.canonical();
        let server = handle.server().address.to_string();
        let store = KeyStore::open(handle.profile(), &server, &user)?;
        let (state, _) = store.load_or_create(&user)?;
        Ok(Encryption {
            store,
            state: Mutex::new(state),
        })
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut E2eState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    /// This device's id.
    #[must_use]
    pub fn device(&self) -> DeviceId {
        self.with_state(|s| DeviceId(s.device.id().device))
    }

    /// Tells the server which device this connection is, publishes the signed device
    /// list if the server's copy differs, and tops up the KeyPackage stock.
    ///
    /// # Errors
    /// If the server refuses or the keys cannot be saved.
    pub async fn publish(&self, handle: &ClientHandle) -> Result<(), E2eError> {
        let (device, signed) = self.with_state(|s| {
            (
                DeviceId(s.device.id().device),
                s.device.signed_device_list(),
            )
        });
        let signed = signed?;
        handle.request(Request::SetDevice { device }).await?;
        let mine = IdentityBundle {
            identity_key: signed.identity_key,
            device_list: signed.device_list,
            signature: signed.signature,
        };
        let published = match handle
            .request(Request::FetchIdentity {
                user: handle.user().username.to_string(),
            })
            .await?
        {
            Reply::Identity { bundle, .. } => bundle,
            _ => return Err(E2eError::Unexpected("fetch_identity")),
        };
        if published.as_ref() != Some(&mine) {
            handle
                .request(Request::PublishIdentity { bundle: mine })
                .await?;
        }
        let stock = match handle
            .request(Request::UploadKeyPackages {
                device,
                one_time: Vec::new(),
                last_resort: None,
            })
            .await?
        {
            Reply::KeyPackageStock {
                one_time,
                last_resort,
            } => (one_time, last_resort),
            _ => return Err(E2eError::Unexpected("upload_key_packages")),
        };
        if stock.0 < KEY_PACKAGE_STOCK / 2 || !stock.1 {
            let missing = usize::try_from(KEY_PACKAGE_STOCK.saturating_sub(stock.0)).unwrap_or(0);
            let (one_time, last_resort) = self.with_state(|s| {
                let one_time = s.device.key_packages(missing);
                let last_resort = if stock.1 {
                    Ok(None)
                } else {
                    s.device.last_resort_key_package().map(Some)
                };
                (one_time, last_resort)
            });
            let (one_time, last_resort) = (one_time?, last_resort?);
            // The private halves are in the device state: save it before the public
            // halves go out, so that no Welcome can arrive for a key we lost.
            self.save()?;
            handle
                .request(Request::UploadKeyPackages {
                    device,
                    one_time,
                    last_resort,
                })
                .await?;
        }
        Ok(())
    }

    /// Fetches `user`'s identity, checks it against what is pinned, and returns the
    /// safety number of this account and theirs.
    ///
    /// # Errors
    /// [`E2eError::NoIdentity`] if they never published one; [`E2eError::BadIdentity`]
    /// if it does not verify.
    pub async fn verification(
        &self,
        handle: &ClientHandle,
        user: &UserName,
    ) -> Result<Verification, E2eError> {
        let bundle = match handle
            .request(Request::FetchIdentity {
                user: user.to_string(),
            })
            .await?
        {
            Reply::Identity { bundle, .. } => {
                bundle.ok_or_else(|| E2eError::NoIdentity(user.clone()))?
            }
            _ => return Err(E2eError::Unexpected("fetch_identity")),
        };
        let canonical = user.canonical();
        let signed = SignedDeviceList {
            identity_key: bundle.identity_key,
            device_list: bundle.device_list,
            signature: bundle.signature,
        };
        let own_user = handle.user().username.canonical();
        let (change, verification) = self.with_state(|s| {
            let change =
                s.trust
                    .observe(&canonical, &signed)
                    .map_err(|reason| E2eError::BadIdentity {
                        user: user.clone(),
                        reason,
                    })?;
            let contact = s.trust.contact(&canonical);
            let verified = contact.is_some_and(|c| c.verified);
            let key_changed = contact.is_some_and(|c| c.key_changed);
            let safety_number = SafetyNumber::compute(
                (&own_user, s.device.identity_key()),
                (&canonical, &signed.identity_key),
            );
            Ok::<_, E2eError>((change, (safety_number, verified, key_changed)))
        })?;
        self.save()?;
        Ok(Verification {
            user: user.clone(),
            safety_number: verification.0,
            verified: verification.1,
            key_changed: verification.2,
            change,
        })
    }

    /// Records that the user compared the safety number with `user` and it matched.
    ///
    /// # Errors
    /// If the keys cannot be saved.
    pub fn mark_verified(&self, user: &UserName) -> Result<bool, E2eError> {
        let marked = self.with_state(|s| s.trust.mark_verified(&user.canonical()));
        self.save()?;
        Ok(marked)
    }

    /// Writes the keys to the profile.
    ///
    /// # Errors
    /// If they cannot be sealed or written.
    pub fn save(&self) -> Result<(), E2eError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.store.save(&state)?;
        Ok(())
    }
}
