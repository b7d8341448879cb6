//! Request handlers of the MLS delivery service: devices, identity bundles,
//! KeyPackages, group creation and commits, Welcomes, ephemeral messages and direct
//! conversations opened without a message.
//!
//! The connection parses the public framing of MLS messages here (with
//! `confide_crypto::ds`, off the room actor), builds a new group's public state and
//! resolves user names; the room actor decides and verifies commits. Nothing here logs or inspects more than ids, epochs and counts.

use super::{Connection, LoggedIn};
use crate::room::{CommitRequest, Ephemeral, ResolvedWelcome};
use crate::state::{blocking, internal};
use crate::store::StoreError;
use confide_crypto::ds;
use confide_proto::{
    DeviceId, Epoch, ErrorCode, Event, IdentityBundle, PendingWelcome, ProtoError, Reply, RoomId,
    ServerFrame, WelcomeId, WelcomeOut,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

/// Largest identity key in a bundle (an Ed25519 key is 32 bytes).
const MAX_IDENTITY_KEY: usize = 64;
/// Largest signature in a bundle (an Ed25519 signature is 64 bytes).
const MAX_SIGNATURE: usize = 128;
/// Largest encoded device list.
const MAX_DEVICE_LIST: usize = 64 * 1024;
/// Largest KeyPackage.
const MAX_KEY_PACKAGE: usize = 16 * 1024;
/// Most devices one Welcome may be addressed to.
const MAX_WELCOME_RECIPIENTS: usize = 1000;
/// Largest ephemeral message (typing indicators and the like are tiny).
const MAX_EPHEMERAL: usize = 4 * 1024;
/// Bytes of Welcomes in one reply, keeping it well under the 1 MiB frame limit.
const WELCOMES_BUDGET: usize = 768 * 1024;

fn error(code: ErrorCode, message: impl Into<String>) -> ProtoError {
    ProtoError::new(code, message)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Connection {
    pub(super) fn set_device(&mut self, device: DeviceId) -> Reply {
        self.device = Some(device);
        Reply::Ok
    }

    pub(super) async fn publish_identity(
        &self,
        user: &LoggedIn,
        bundle: IdentityBundle,
    ) -> Result<Reply, ProtoError> {
        for (what, len, max) in [
            ("identity key", bundle.identity_key.len(), MAX_IDENTITY_KEY),
            ("signature", bundle.signature.len(), MAX_SIGNATURE),
            ("device list", bundle.device_list.len(), MAX_DEVICE_LIST),
        ] {
            if len > max {
                return Err(error(
                    ErrorCode::InvalidArgument,
                    format!("the {what} has {len} bytes, more than the {max} allowed"),
                ));
            }
        }
        let id = user.id;
        blocking(&self.shared.store, move |store| {
            store.set_identity(id, &bundle)
        })
        .await?;
        self.shared
            .events
            .record("publish_identity", &[("user", &user.name)]);
        self.announce_identity(user).await?;
        Ok(Reply::Ok)
    }

    /// Tells every online user who shares a room with `user` (and `user`'s other
    /// connections) that their identity bundle changed.
    async fn announce_identity(&self, user: &LoggedIn) -> Result<(), ProtoError> {
        let frame = crate::outbound::encode(&ServerFrame::Event(Event::IdentityChanged {
            user: user.name.clone(),
        }));
        let Some(frame) = frame else { return Ok(()) };
        let id = user.id;
        let rooms = blocking(&self.shared.store, move |store| store.rooms_of(id)).await?;
        let mut told = HashSet::from([self.conn]);
        let own = self.shared.sessions.connections(user.id);
        for (room, _) in rooms {
            let Some(handle) = self.shared.rooms.resident(room) else {
                continue;
            };
            for out in handle.online().await?.iter() {
                if told.insert(out.conn) {
                    out.push(frame.clone());
                }
            }
        }
        for out in &own {
            if told.insert(out.conn) {
                out.push(frame.clone());
            }
        }
        Ok(())
    }

    pub(super) async fn fetch_identity(&self, name: String) -> Result<Reply, ProtoError> {
        let person = self.person(name).await?;
        let id = person.id;
        let bundle = blocking(&self.shared.store, move |store| store.identity(id)).await?;
        Ok(Reply::Identity {
            user: person.name,
            bundle,
        })
    }

    pub(super) async fn upload_key_packages(
        &self,
        user: &LoggedIn,
        device: DeviceId,
        one_time: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<Reply, ProtoError> {
        let max = self.shared.config.limits.key_packages_per_device as usize;
        if one_time.len() > max {
            return Err(error(
                ErrorCode::InvalidArgument,
                format!("a device holds at most {max} one-time KeyPackages"),
            ));
        }
        let labelled = one_time
            .iter()
            .enumerate()
            .map(|(index, package)| (format!("one-time KeyPackage {index}"), package))
            .chain(
                last_resort
                    .iter()
                    .map(|package| ("the last-resort KeyPackage".to_owned(), package)),
            );
        for (what, package) in labelled {
            if package.len() > MAX_KEY_PACKAGE {
                return Err(error(
                    ErrorCode::InvalidArgument,
                    format!(
                        "{what} has {} bytes, more than the {MAX_KEY_PACKAGE} allowed",
                        package.len()
                    ),
                ));
            }
            if let Err(err) = ds::inspect_key_package(package) {
                return Err(error(ErrorCode::InvalidArgument, format!("{what}: {err}")));
            }
        }
        let id = user.id;
        let store = Arc::clone(&self.shared.store);
        let stored = tokio::task::spawn_blocking(move || {
            if one_time.is_empty() && last_resort.is_none() {
                return store.key_package_stock(id, device);
            }
            store.add_key_packages(id, device, &one_time, last_resort.as_deref(), max)
        })
        .await
        .map_err(|err| internal(&err))?;
        let stock = match stored {
            Ok(stock) => stock,
            Err(StoreError::Limit(max)) => {
                return Err(error(
                    ErrorCode::InvalidArgument,
                    format!(
                        "a device holds at most {max} one-time KeyPackages; nothing was stored"
                    ),
                ));
            }
            Err(err) => return Err(internal(&err)),
        };
        Ok(Reply::KeyPackageStock {
            one_time: count(stock.one_time),
            last_resort: stock.last_resort,
        })
    }

    pub(super) async fn claim_key_packages(
        &self,
        user: &LoggedIn,
        name: String,
    ) -> Result<Reply, ProtoError> {
        if !self.shared.claim_rates.take(user.id, Instant::now()) {
            return Err(error(
                ErrorCode::RateLimited,
                "too many KeyPackage claims; wait a little and try again",
            ));
        }
        let target = self.person(name).await?;
        let id = target.id;
        let claimed = blocking(&self.shared.store, move |store| {
            store.claim_key_packages(id)
        })
        .await?;
        self.shared.events.record(
            "claim_key_packages",
            &[
                ("claimer", &user.name),
                ("target", &target.name),
                ("count", &claimed.len()),
            ],
        );
        if claimed.is_empty() {
            return Err(error(
                ErrorCode::NoKeyPackages,
                format!(
                    "{} has no device set up for end-to-end encryption",
                    target.name
                ),
            ));
        }
        Ok(Reply::KeyPackages(claimed))
    }

    pub(super) async fn init_group(
        &self,
        user: &LoggedIn,
        room: RoomId,
        group_info: Vec<u8>,
    ) -> Result<Reply, ProtoError> {
        let handle = self.room(room).await?;
        let epoch = ds::inspect_group_info(room.0, &group_info);
        // The group's public state, checked to hold only this connection's device (one
        // leaf: a signature or two to verify, here rather than on the room's actor).
        let watch = self.device.map(|device| {
            let creator = confide_crypto::MemberId {
                user: user.name.canonical(),
                device: device.0,
            };
            ds::GroupWatch::init(room.0, &group_info, &creator)
        });
        let reply = handle
            .init_group(user.person(), group_info, epoch, watch)
            .await?;
        self.shared
            .events
            .record("init_group", &[("room", &room), ("user", &user.name)]);
        Ok(reply)
    }

    pub(super) async fn commit(
        &self,
        user: &LoggedIn,
        room: RoomId,
        epoch: Epoch,
        commit: Vec<u8>,
        group_info: Vec<u8>,
        welcome: Option<WelcomeOut>,
    ) -> Result<Reply, ProtoError> {
        let handle = self.room(room).await?;
        let commit_info = ds::inspect_commit(room.0, &commit);
        let group_info_epoch = ds::inspect_group_info(room.0, &group_info);
        let welcome = match welcome {
            Some(welcome) => Some(self.resolve_welcome(welcome).await),
            None => None,
        };
        let recipients = match &welcome {
            Some(Ok(welcome)) => welcome.recipients.len(),
            _ => 0,
        };
        let reply = handle
            .commit(CommitRequest {
                sender: user.person(),
                device: self.device,
                epoch,
                commit,
                commit_info,
                group_info,
                group_info_epoch,
                welcome,
            })
            .await?;
        self.shared.events.record(
            "commit",
            &[
                ("room", &room),
                ("epoch", &epoch),
                ("recipients", &recipients),
                ("user", &user.name),
            ],
        );
        Ok(reply)
    }

    /// Checks a Welcome and turns its recipients into accounts, each device once.
    async fn resolve_welcome(&self, welcome: WelcomeOut) -> Result<ResolvedWelcome, ProtoError> {
        ds::inspect_welcome(&welcome.data)
            .map_err(|err| error(ErrorCode::InvalidHandshake, format!("welcome: {err}")))?;
        let n = welcome.recipients.len();
        if !(1..=MAX_WELCOME_RECIPIENTS).contains(&n) {
            return Err(error(
                ErrorCode::InvalidArgument,
                format!("a Welcome needs 1 to {MAX_WELCOME_RECIPIENTS} recipients, not {n}"),
            ));
        }
        let mut seen = HashSet::new();
        let mut recipients = Vec::with_capacity(n);
        for recipient in welcome.recipients {
            let person = match self.person(recipient.user.clone()).await {
                Ok(person) => person,
                Err(err) if err.code == ErrorCode::NoSuchUser => {
                    return Err(error(
                        ErrorCode::NotMember,
                        format!(
                            "{:?} is not a member of this room (no such user)",
                            recipient.user
                        ),
                    ));
                }
                Err(err) => return Err(err),
            };
            if seen.insert((person.id, recipient.device)) {
                recipients.push((person, recipient.device));
            }
        }
        Ok(ResolvedWelcome {
            data: welcome.data,
            recipients,
        })
    }

    pub(super) async fn fetch_group_info(
        &self,
        user: &LoggedIn,
        room: RoomId,
    ) -> Result<Reply, ProtoError> {
        self.room(room).await?.group_info(user.id).await
    }

    pub(super) async fn fetch_welcomes(
        &self,
        user: &LoggedIn,
        device: DeviceId,
    ) -> Result<Reply, ProtoError> {
        let id = user.id;
        let all = blocking(&self.shared.store, move |store| store.welcomes(id, device)).await?;
        // Oldest first, as many as fit in one reply; the client acknowledges them and
        // fetches again.
        let mut budget = WELCOMES_BUDGET;
        let mut welcomes: Vec<PendingWelcome> = Vec::new();
        for welcome in all {
            let size = welcome.data.len() + 64;
            if size > budget && !welcomes.is_empty() {
                break;
            }
            budget = budget.saturating_sub(size);
            welcomes.push(welcome);
        }
        Ok(Reply::Welcomes(welcomes))
    }

    pub(super) async fn ack_welcome(
        &self,
        user: &LoggedIn,
        id: WelcomeId,
        device: DeviceId,
    ) -> Result<Reply, ProtoError> {
        let user_id = user.id;
        let deleted = blocking(&self.shared.store, move |store| {
            store.delete_welcome(user_id, device, id)
        })
        .await?;
        if deleted {
            Ok(Reply::Ok)
        } else {
            Err(error(
                ErrorCode::NoSuchWelcome,
                format!("no pending Welcome {} for this device", id.0),
            ))
        }
    }

    pub(super) async fn send_ephemeral(
        &self,
        user: &LoggedIn,
        room: RoomId,
        body: Vec<u8>,
    ) -> Result<Reply, ProtoError> {
        if body.len() > MAX_EPHEMERAL {
            return Err(error(
                ErrorCode::MessageTooLarge,
                format!(
                    "ephemeral message of {} bytes exceeds the limit of {MAX_EPHEMERAL} bytes",
                    body.len()
                ),
            ));
        }
        self.room(room)
            .await?
            .ephemeral(Ephemeral {
                sender: user.person(),
                device: self.device,
                conn: self.conn,
                body,
            })
            .await?;
        Ok(Reply::Ok)
    }

    pub(super) async fn open_direct(
        &self,
        user: &LoggedIn,
        name: String,
    ) -> Result<Reply, ProtoError> {
        let peer = self.person(name).await?;
        if peer.id == user.id {
            return Err(error(
                ErrorCode::InvalidArgument,
                "you cannot open a direct conversation with yourself",
            ));
        }
        let handle = self.shared.rooms.direct(&user.person(), &peer).await?;
        Ok(Reply::Room(handle.view(user.id).await?.info))
    }
}
