//! Live voice (push-to-talk): frames sealed under stream keys exported from the room's
//! current MLS epoch (see `confide_crypto::voice`), relayed by the server only to the
//! connections that switched their speaker on.
//!
//! Sending never waits for the server inside this task: a frame is sealed here (the
//! group's exporter lives here) and its request goes out from a task of its own, so a
//! slow answer does not hold up messages. Receiving checks, per stream and epoch once,
//! that the sender's device is in the group, then opens frames with the cached key and
//! drops replays and anything stale or forged without a warning (live audio is lossy
//! by nature); the reason is traced without content.

use super::Secure;
use super::live::EphemeralIn;
use crate::error::ClientError;
use crate::event::ClientEvent;
use confide_crypto::voice::{self, VOICE_LABEL, VoiceFrame, VoiceHeader, VoiceKey};
use confide_proto::{Request, RoomId};
use rand::RngCore as _;
use std::collections::HashMap;
use tokio::sync::oneshot;

/// Cached keys and replay counters at most, before the caches start over.
const CACHE_LIMIT: usize = 1024;

/// A receiving stream: room, sender, device, stream id.
type StreamId = (RoomId, String, u64, [u8; 16]);

/// This device's live voice state.
pub(crate) struct VoiceState {
    /// This client's stream id (random per run, so nonces never repeat across runs).
    stream: [u8; 16],
    /// The next frame's counter.
    counter: u64,
    /// Sending keys per room and epoch.
    send_keys: HashMap<(RoomId, u64), VoiceKey>,
    /// Receiving keys per stream and epoch (the sender was checked against the group).
    recv_keys: HashMap<(StreamId, u64), VoiceKey>,
    /// The highest counter opened per stream.
    seen: HashMap<StreamId, u64>,
}

impl VoiceState {
    pub(crate) fn new() -> VoiceState {
        let mut stream = [0u8; 16];
        rand::rng().fill_bytes(&mut stream);
        VoiceState {
            stream,
            counter: 0,
            send_keys: HashMap::new(),
            recv_keys: HashMap::new(),
            seen: HashMap::new(),
        }
    }
}

impl std::fmt::Debug for VoiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceState").finish_non_exhaustive()
    }
}

fn bounded<K, V>(map: &mut HashMap<K, V>) {
    if map.len() >= CACHE_LIMIT {
        map.clear();
    }
}

impl Secure {
    /// Seals a frame for the room's current epoch and sends it from a task of its own;
    /// `reply` gets the server's answer.
    pub(super) fn send_voice(
        &mut self,
        room: RoomId,
        frame: &VoiceFrame,
        reply: oneshot::Sender<Result<(), ClientError>>,
    ) {
        let sealed = self.seal_voice(room, frame);
        let body = match sealed {
            Ok(body) => body,
            Err(err) => {
                let _ = reply.send(Err(err));
                return;
            }
        };
        let requests = self.requests.clone();
        tokio::spawn(async move {
            let result = requests
                .request(Request::SendVoice { room, body })
                .await
                .map(|_| ());
            let _ = reply.send(result);
        });
    }

    fn seal_voice(&mut self, room: RoomId, frame: &VoiceFrame) -> Result<Vec<u8>, ClientError> {
        if !self.state.device.has_group(room.0) {
            return Err(ClientError::Protocol(format!(
                "room {room}: this device has no keys for the room's group yet (send a \
                 message first)"
            )));
        }
        let epoch = self.state.device.epoch(room.0)?;
        let key = match self.voice.send_keys.get(&(room, epoch)) {
            Some(key) => key.clone(),
            None => {
                let me = self.state.device.id().clone();
                let context = voice::key_context(room.0, &me.user, me.device, &self.voice.stream);
                let key = self.export_voice_key(room, &context)?;
                bounded(&mut self.voice.send_keys);
                self.voice.send_keys.insert((room, epoch), key.clone());
                key
            }
        };
        let header = VoiceHeader {
            epoch,
            stream: self.voice.stream,
            counter: self.voice.counter,
        };
        self.voice.counter += 1;
        voice::seal(&key, &header, frame)
            .map_err(|err| ClientError::Protocol(format!("cannot send live voice: {err}")))
    }

    fn export_voice_key(&self, room: RoomId, context: &[u8]) -> Result<VoiceKey, ClientError> {
        let secret = self
            .state
            .device
            .export_secret(room.0, VOICE_LABEL, context, 32)?;
        let mut bytes = [0u8; 32];
        if secret.len() != 32 {
            return Err(ClientError::Protocol(
                "exporter gave a short key".to_owned(),
            ));
        }
        bytes.copy_from_slice(&secret);
        Ok(VoiceKey::from_bytes(bytes))
    }

    /// A live voice frame from the server: opened if it is from a device of the
    /// room's current group and newer than what this stream sent before.
    pub(super) fn on_voice(&mut self, voice_in: EphemeralIn) -> Option<ClientEvent> {
        let room = voice_in.room;
        let Some(device) = voice_in.device else {
            tracing::debug!(%room, "live voice without a device");
            return None;
        };
        if !self.state.device.has_group(room.0) {
            return None;
        }
        let header = voice::parse_header(&voice_in.body).ok()?;
        let epoch = self.state.device.epoch(room.0).ok()?;
        if header.epoch != epoch {
            tracing::debug!(%room, "live voice from another epoch");
            return None;
        }
        let user = voice_in.sender.canonical();
        let stream: StreamId = (room, user.clone(), device.0, header.stream);
        let key = match self.voice.recv_keys.get(&(stream.clone(), epoch)) {
            Some(key) => key.clone(),
            None => {
                let members = self.state.device.members(room.0).ok()?;
                if !members
                    .iter()
                    .any(|m| m.id.user == user && m.id.device == device.0)
                {
                    tracing::debug!(%room, "live voice from a device outside the group");
                    return None;
                }
                let context = voice::key_context(room.0, &user, device.0, &header.stream);
                let key = self.export_voice_key(room, &context).ok()?;
                bounded(&mut self.voice.recv_keys);
                self.voice
                    .recv_keys
                    .insert((stream.clone(), epoch), key.clone());
                key
            }
        };
        let (header, frame) = match voice::open(&key, &voice_in.body) {
            Ok(opened) => opened,
            Err(err) => {
                tracing::debug!(%room, cause = %err, "live voice that does not open");
                return None;
            }
        };
        if self
            .voice
            .seen
            .get(&stream)
            .is_some_and(|&last| header.counter <= last)
        {
            tracing::debug!(%room, "a replayed live voice frame");
            return None;
        }
        if !self.voice.seen.contains_key(&stream) {
            bounded(&mut self.voice.seen);
        }
        self.voice.seen.insert(stream, header.counter);
        Some(ClientEvent::Voice {
            room,
            user: voice_in.sender,
            frame,
        })
    }
}
