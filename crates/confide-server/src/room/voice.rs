//! Live voice: the room actor keeps the set of connections listening in the room and
//! relays each voice frame to them, except to the connection that sent it.
//!
//! Listening belongs to a connection, not to a user: it starts with `Listen { on: true }`
//! and ends with `Listen { on: false }`, when the connection closes (it unsubscribes)
//! or when its user leaves or is removed. Frames are end-to-end encrypted audio, never
//! stored, read or logged. They are lossy by nature, so a listener whose queue is
//! filling up misses frames (see [`Outbound::offer`]) rather than being disconnected.

use super::{Person, RoomActor, deny};
use crate::outbound::{ConnId, Outbound, encode};
use confide_proto::{DeviceId, ErrorCode, Event, ProtoError, ServerFrame, UserId};

/// A live voice frame to relay.
#[derive(Debug)]
pub struct Voice {
    /// Who speaks.
    pub sender: Person,
    /// Their connection's device.
    pub device: Option<DeviceId>,
    /// Their connection, which does not get it back.
    pub conn: ConnId,
    /// Opaque bytes.
    pub body: Vec<u8>,
}

impl RoomActor {
    /// Turns live voice on or off for the connection `out`, of a member.
    pub(super) fn listen(&mut self, out: Outbound, on: bool) -> Result<(), ProtoError> {
        if !self.members.contains_key(&out.user) {
            return deny(ErrorCode::NotMember, "you are not in this room");
        }
        if !on {
            self.listeners.remove(&out.conn);
        } else if !out.is_closed() {
            self.listeners.insert(out.conn, out);
        }
        Ok(())
    }

    /// Stops live voice for every connection of a user who is no longer a member.
    pub(super) fn stop_listening_user(&mut self, user: UserId) {
        self.listeners.retain(|_, out| out.user != user);
    }

    /// Relays a voice frame to every listening connection but the sender's.
    pub(super) fn voice(&mut self, voice: Voice) -> Result<(), ProtoError> {
        if !self.members.contains_key(&voice.sender.id) {
            return deny(ErrorCode::NotMember, "you are not in this room");
        }
        self.listeners.retain(|_, out| !out.is_closed());
        if self.listeners.keys().all(|conn| *conn == voice.conn) {
            return Ok(());
        }
        let frame = ServerFrame::Event(Event::Voice {
            room: self.record.id,
            sender: voice.sender.name,
            device: voice.device,
            body: voice.body,
        });
        let Some(frame) = encode(&frame) else {
            return Ok(());
        };
        for (conn, out) in &self.listeners {
            if *conn != voice.conn {
                out.offer(frame.clone());
            }
        }
        Ok(())
    }
}
