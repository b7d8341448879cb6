//! What happens between messages: typing notices, sent and received as ephemeral
//! end-to-end encrypted messages that the server relays without storing; receipts
//! (delivered, read) in small rooms; and removing the devices of members who left from
//! the room's group soon after they leave.

use super::store::Stored;
use super::{Secure, is_code, unexpected};
use crate::error::ClientError;
use crate::event::ClientEvent;
use confide_crypto::payload::{Envelope, MessageId, Payload, ReceiptKind};
use confide_crypto::{CryptoError, Incoming, MemberId};
use confide_proto::{DeviceId, ErrorCode, MemberChange, Reply, Request, RoomId, UserName};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

/// While someone types, a "typing" notice goes out at most this often per room.
/// Receivers show one for [`crate::model::TYPING_SHOWN_FOR`], which is longer.
pub const TYPING_REPEAT: Duration = Duration::from_secs(3);

/// Receipts are sent in direct conversations and rooms of at most this many members
/// (each receipt is a message to everyone: in a large room they would outnumber the
/// messages).
pub const RECEIPT_ROOM_MAX: u32 = 20;

/// How long the first member in line waits before removing a departed member's
/// devices, and how much longer each next one waits (they check first whether it is
/// still needed, so usually one commit is made).
const DEPARTURE_FIRST: Duration = Duration::from_millis(200);
const DEPARTURE_STEP: Duration = Duration::from_millis(1500);
/// Members further down the line than this wait no longer than this many steps.
const DEPARTURE_MAX_RANK: u32 = 8;

/// An ephemeral message relayed by the server.
#[derive(Debug)]
pub(crate) struct EphemeralIn {
    pub room: RoomId,
    pub sender: UserName,
    pub device: Option<DeviceId>,
    pub body: Vec<u8>,
}

impl Secure {
    /// Whether `room` gets receipts (see [`RECEIPT_ROOM_MAX`]).
    fn receipts_wanted(&self, room: RoomId) -> bool {
        self.rooms.get(&room).is_some_and(|info| {
            matches!(info.kind, confide_proto::RoomKind::Direct { .. })
                || info.member_count <= RECEIPT_ROOM_MAX
        })
    }

    /// Confirms delivery of the newest message from others in each room where new ones
    /// arrived (one receipt per room per batch). Failures are only traced: a receipt is
    /// a courtesy, and the next batch confirms more.
    pub(super) async fn send_delivery_receipts(&mut self) {
        let due: Vec<(RoomId, MessageId)> = self.delivered_due.drain().collect();
        for (room, id) in due {
            if !self.receipts_wanted(room) {
                continue;
            }
            let receipt = Payload::Receipt {
                kind: ReceiptKind::Delivered,
                up_to: vec![id],
            };
            if let Err(err) = self.send(confide_proto::Target::Room(room), receipt).await {
                tracing::debug!(%room, cause = %err, "cannot send a delivery receipt");
            }
        }
        if let Err(err) = self.flush() {
            tracing::warn!(cause = %err, "cannot save the end-to-end state");
        }
    }

    /// Says this user read `room` up to `up_to`, once per message.
    pub(super) async fn mark_read(
        &mut self,
        room: RoomId,
        up_to: MessageId,
    ) -> Result<bool, ClientError> {
        if self.read_sent.get(&room) == Some(&up_to) {
            return Ok(false);
        }
        self.room_info(room, false).await?;
        if !self.receipts_wanted(room) {
            return Ok(false);
        }
        let receipt = Payload::Receipt {
            kind: ReceiptKind::Read,
            up_to: vec![up_to],
        };
        self.send(confide_proto::Target::Room(room), receipt)
            .await?;
        // Read covers delivered.
        if self.delivered_due.get(&room) == Some(&up_to) {
            self.delivered_due.remove(&room);
        }
        self.read_sent.insert(room, up_to);
        Ok(true)
    }

    /// Sends a typing notice for `room` unless one went out less than
    /// [`TYPING_REPEAT`] ago (or, to stop, unless none is showing). Returns whether a
    /// notice was sent. Typing never changes the group: in a room this device has no
    /// group for yet, nothing is sent.
    pub(super) async fn typing(&mut self, room: RoomId, active: bool) -> Result<bool, ClientError> {
        let now = Instant::now();
        if active {
            if self
                .typing_sent
                .get(&room)
                .is_some_and(|at| now.duration_since(*at) < TYPING_REPEAT)
            {
                return Ok(false);
            }
        } else if self.typing_sent.remove(&room).is_none() {
            return Ok(false);
        }
        let envelope = Envelope {
            id: MessageId::from_bytes(rand::random()),
            sent_at_ms: super::now_ms(),
            body: Payload::Typing { active },
        };
        let info = self.room_info(room, false).await?;
        let body = if let confide_proto::RoomEncryption::SharedKey { .. } = info.encryption {
            let Some(key) = self.store.shared_key(room.0)? else {
                return Ok(false);
            };
            let plaintext = zeroize::Zeroizing::new(envelope.encode());
            key.encrypt(&plaintext, envelope.sent_at_ms / 1000, rand::random())
                .into_bytes()
        } else {
            if !self.state.device.has_group(room.0) {
                return Ok(false);
            }
            let ciphertext = match self.state.device.encrypt(room.0, &envelope.encode()) {
                Ok(ciphertext) => ciphertext,
                Err(CryptoError::CommitPending) => return Ok(false),
                Err(err) => return Err(err.into()),
            };
            // As for messages: the ratchet moved, so save before the bytes leave.
            self.unsaved = true;
            self.flush()?;
            ciphertext
        };
        match self.request(Request::SendEphemeral { room, body }).await {
            Ok(Reply::Ok) => {
                if active {
                    self.typing_sent.insert(room, now);
                }
                Ok(true)
            }
            Ok(_) => Err(unexpected("send_ephemeral")),
            // The group moved on: the notice is not worth a catch-up; the next one
            // goes out in the new epoch.
            Err(err) if is_code(&err, ErrorCode::StaleEpoch) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// A message was sent in `room`: receivers stop showing "typing" on it, so the
    /// next keystroke may say so again at once.
    pub(super) fn typing_ended(&mut self, room: RoomId) {
        self.typing_sent.remove(&room);
    }

    /// Decrypts an ephemeral message. Only typing notices are ephemeral; anything else,
    /// or anything that does not decrypt or authenticate, is dropped (it was never
    /// going to be stored, and showing a warning for a lost typing notice would be
    /// noise); the reason is traced without content.
    pub(super) async fn on_ephemeral(&mut self, ephemeral: EphemeralIn) -> Option<ClientEvent> {
        let room = ephemeral.room;
        let info = self.room_info(room, false).await.ok()?;
        let envelope = if let confide_proto::RoomEncryption::SharedKey { .. } = info.encryption {
            match self.decrypt_shared(room, &ephemeral.body) {
                Ok(Stored::Message { envelope, .. }) => envelope,
                _ => {
                    tracing::debug!(%room, "an ephemeral message that does not decrypt");
                    return None;
                }
            }
        } else {
            if !self.state.device.has_group(room.0) {
                return None;
            }
            let processed = self.state.device.process(room.0, &ephemeral.body);
            self.unsaved = true;
            match processed {
                Ok(Incoming::Application { sender, plaintext }) => {
                    let claimed = ephemeral.device.map(|d| d.0);
                    if sender.id.user != ephemeral.sender.canonical()
                        || claimed.is_some_and(|device| device != sender.id.device)
                        || !self.device_allowed(&sender).await
                    {
                        tracing::debug!(%room, "an ephemeral message from an unexpected device");
                        return None;
                    }
                    Envelope::decode(&plaintext).ok()?
                }
                Ok(_) => return None,
                Err(err) => {
                    tracing::debug!(%room, cause = %err, "an ephemeral message that does not decrypt");
                    return None;
                }
            }
        };
        match envelope.body {
            Payload::Typing { active } => Some(ClientEvent::Typing {
                room,
                user: ephemeral.sender,
                active,
            }),
            _ => None,
        }
    }

    /// A membership entry was processed for the first time: when someone left or was
    /// removed, arrange for their devices to leave the group; when it was this
    /// account, forget the group's keys.
    pub(super) fn on_departure(&mut self, room: RoomId, user: &UserName, change: MemberChange) {
        if !matches!(
            change,
            MemberChange::Left | MemberChange::Kicked | MemberChange::Banned
        ) || !self.state.device.has_group(room.0)
        {
            return;
        }
        if user.canonical() == self.me.canonical() {
            // This device can no longer read the room: keep no keys for it.
            if let Err(err) = self.state.device.drop_group(room.0) {
                tracing::warn!(%room, cause = %err, "cannot forget a group after leaving");
            }
            self.unsaved = true;
            self.departures.remove(&room);
            return;
        }
        // Members take turns in leaf order, so that usually one of them commits and the
        // others find nothing left to do.
        let Ok(members) = self.state.device.members(room.0) else {
            return;
        };
        let me = self.state.device.id().clone();
        let gone = user.canonical();
        let rank = members
            .iter()
            .filter(|m| m.id.user != gone)
            .position(|m| m.id == me)
            .and_then(|rank| u32::try_from(rank).ok())
            .unwrap_or(DEPARTURE_MAX_RANK)
            .min(DEPARTURE_MAX_RANK);
        let due = Instant::now() + DEPARTURE_FIRST + DEPARTURE_STEP * rank;
        let slot = self.departures.entry(room).or_insert(due);
        *slot = (*slot).min(due);
    }

    /// The earliest departure check that is due, if any.
    pub(super) fn next_departure(&self) -> Option<Instant> {
        self.departures.values().min().copied()
    }

    /// Runs the departure checks that are due.
    pub(super) async fn run_departures(&mut self) {
        let now = Instant::now();
        let due: Vec<RoomId> = self
            .departures
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(room, _)| *room)
            .collect();
        for room in due {
            self.departures.remove(&room);
            if let Err(err) = self.remove_departed(room).await {
                tracing::warn!(%room, cause = %err, "cannot remove departed members' devices");
                self.emit(ClientEvent::Warning(format!(
                    "room {room}: cannot remove the devices of members who left yet ({err}); \
                     it is done before the next message"
                )));
            }
        }
        if let Err(err) = self.flush() {
            tracing::warn!(cause = %err, "cannot save the end-to-end state");
        }
    }

    /// Removes from the room's group every device whose user is no longer a member
    /// (after catching up, so that a removal someone else made is seen). Cheaper than a
    /// full reconciliation: one member list, no identity lookups.
    pub(super) async fn remove_departed(&mut self, room: RoomId) -> Result<(), ClientError> {
        for _ in 0..super::group::COMMIT_ATTEMPTS {
            if !self.state.device.has_group(room.0) {
                return Ok(());
            }
            self.catch_up(room).await?;
            if !self.state.device.has_group(room.0) {
                return Ok(());
            }
            let members = match self.request(Request::Members { room }).await {
                Ok(Reply::Members(members)) => members,
                Ok(_) => return Err(unexpected("members")),
                // This account is no longer in the room itself.
                Err(err) if is_code(&err, ErrorCode::NotMember) => return Ok(()),
                Err(err) => return Err(err),
            };
            let staying: BTreeSet<String> = members.iter().map(|m| m.user.canonical()).collect();
            let me = self.state.device.id().clone();
            let removals: Vec<MemberId> = self
                .state
                .device
                .members(room.0)?
                .into_iter()
                .map(|m| m.id)
                .filter(|id| *id != me && !staying.contains(&id.user))
                .collect();
            if removals.is_empty() {
                return Ok(());
            }
            let prepared = self
                .state
                .device
                .prepare_commit(room.0, &[], &removals, |_| true)?;
            if self.submit(room, prepared).await?.is_some() {
                return Ok(());
            }
        }
        Err(super::E2eError::Contended(room).into())
    }
}
