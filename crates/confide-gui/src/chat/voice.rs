//! Voice in the chat screen: recording a voice message (🎤, then Send or Cancel),
//! playing one, and live voice per room: a speaker toggle (the server relays a room's
//! voice only to connections that listen), a microphone toggle (push to talk), who is
//! talking, and the capture-to-playback delay.
//!
//! The sound itself is the audio thread's ([`crate::audio`]); this module forwards and
//! draws. Buttons whose device is missing are disabled, with the system's reason on hover.

use super::media::{MediaAction, Playback, clock};
use super::{ChatScreen, Outcome};
use crate::app::Update;
use crate::audio::{AudioUpdate, Clip, LiveOut};
use crate::bridge::Bridge;
use crate::transfers::Direction;
use confide_crypto::payload::MessageId;
use confide_proto::{RoomId, Target, UserName};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Voice messages larger than this are not fetched for playing.
const VOICE_MAX_BYTES: u64 = 20 * 1024 * 1024;

/// Someone counts as talking for this long after their last frame.
const TALKING_FOR: Duration = Duration::from_millis(600);

/// Live frames waiting to be sent at most (0.5 s); beyond that they are dropped.
const LIVE_QUEUE: usize = 25;

/// A voice message being recorded.
#[derive(Debug, Clone)]
pub(super) struct Recording {
    room: RoomId,
    elapsed: Duration,
    level: f32,
}

/// The chat screen's voice state.
#[derive(Default)]
pub(super) struct VoiceState {
    recording: Option<Recording>,
    pub(super) playback: Option<Playback>,
    /// Rooms whose speaker is on.
    listening: HashSet<RoomId>,
    /// The room this user talks into, if any.
    talking: Option<RoomId>,
    /// Per room, who was heard last and when (by canonical name).
    heard: HashMap<RoomId, HashMap<String, (UserName, Instant)>>,
    /// Per room, the last capture-to-playback delay measured.
    latency: HashMap<RoomId, u64>,
    /// Listening must be asked again (after a reconnection).
    relisten: bool,
}

impl VoiceState {
    /// The connection came back: the server forgot who listens.
    pub(super) fn reconnected(&mut self) {
        self.relisten = !self.listening.is_empty();
    }
}

impl ChatScreen {
    /// The record button beside the input, or the recording's length with Send and
    /// Cancel while recording.
    pub(super) fn record_controls(&mut self, ui: &mut egui::Ui, room: RoomId) {
        if let Some(recording) = &self.voice.recording {
            ui.ctx().request_repaint_after(Duration::from_millis(200));
            ui.label(format!("🔴 Recording {}", clock(recording.elapsed)));
            ui.add(egui::ProgressBar::new(recording.level.clamp(0.0, 1.0)).desired_width(60.0));
            let to = recording.room;
            if ui.button("Send").clicked() {
                self.audio.finish_recording(Some(to));
                self.voice.recording = None;
            }
            if ui.button("Cancel").clicked() {
                self.audio.finish_recording(None);
                self.voice.recording = None;
            }
            return;
        }
        let microphone = self.audio.microphone();
        let response = ui
            .add_enabled(microphone.is_ok(), egui::Button::new("🎤 Record"))
            .on_hover_text("Record a voice message");
        let response = match &microphone {
            Err(reason) => response.on_disabled_hover_text(reason.as_str()),
            Ok(()) => response,
        };
        if response.clicked() {
            self.audio.start_recording();
            self.voice.recording = Some(Recording {
                room,
                elapsed: Duration::ZERO,
                level: 0.0,
            });
        }
    }

    /// The room's live voice row: speaker and microphone toggles, the delay, who talks.
    pub(super) fn voice_bar(&mut self, ui: &mut egui::Ui, room: RoomId, bridge: &Bridge<Update>) {
        ui.horizontal(|ui| {
            let listening = self.voice.listening.contains(&room);
            let speaker = self.audio.speaker();
            let response = ui
                .add_enabled(
                    speaker.is_ok(),
                    egui::Button::selectable(listening, "🔈 Listen"),
                )
                .on_hover_text("Hear this room's live voice");
            let response = match &speaker {
                Err(reason) => response.on_disabled_hover_text(reason.as_str()),
                Ok(()) => response,
            };
            if response.clicked() {
                if listening {
                    self.voice.listening.remove(&room);
                } else {
                    self.voice.listening.insert(room);
                }
                self.set_listening(room, !listening, bridge);
            }
            let talking = self.voice.talking == Some(room);
            let microphone = self.audio.microphone();
            let response = ui
                .add_enabled(
                    microphone.is_ok(),
                    egui::Button::selectable(talking, "🎙 Talk"),
                )
                .on_hover_text("Talk to this room's listeners while this is on");
            let response = match &microphone {
                Err(reason) => response.on_disabled_hover_text(reason.as_str()),
                Ok(()) => response,
            };
            if response.clicked() {
                if talking {
                    self.voice.talking = None;
                    self.audio.talk(None);
                } else {
                    self.voice.talking = Some(room);
                    let out = self.live_sender(bridge);
                    self.audio.talk(Some((room, out)));
                }
            }
            if listening {
                match self.voice.latency.get(&room) {
                    Some(ms) => ui.label(format!("voice: {ms} ms")),
                    None => ui.weak("voice: waiting"),
                };
            }
            let now = Instant::now();
            let mut talkers: Vec<&str> = self
                .voice
                .heard
                .get(&room)
                .into_iter()
                .flat_map(HashMap::values)
                .filter(|(_, at)| now.duration_since(*at) < TALKING_FOR)
                .map(|(user, _)| user.as_str())
                .collect();
            talkers.sort_unstable();
            if talking {
                talkers.insert(0, "you");
            }
            if !talkers.is_empty() {
                ui.ctx().request_repaint_after(Duration::from_millis(250));
                ui.label(format!("🔊 {} talking", talkers.join(", ")));
            }
        });
    }

    /// After a reconnection, tells the server again which rooms this client listens to.
    pub(super) fn relisten(&mut self, bridge: &Bridge<Update>) {
        if std::mem::take(&mut self.voice.relisten) {
            for room in self.voice.listening.clone() {
                self.set_listening(room, true, bridge);
            }
        }
    }

    /// Switches the room's speaker on the server and in the audio thread.
    fn set_listening(&mut self, room: RoomId, on: bool, bridge: &Bridge<Update>) {
        self.audio.hear(room, on);
        if !on {
            self.voice.heard.remove(&room);
            self.voice.latency.remove(&room);
        }
        let client = self.client.clone();
        bridge.spawn(async move {
            match client.listen(room, on).await {
                Ok(()) => None,
                Err(err) => Some(Update::Outcome(Outcome::Done(Err(format!(
                    "cannot switch the speaker: {err}"
                ))))),
            }
        });
    }

    /// A task that sends this user's live frames, in order, until the audio thread
    /// stops talking (drops the sender).
    fn live_sender(&self, bridge: &Bridge<Update>) -> LiveOut {
        let (out, mut frames) = tokio::sync::mpsc::channel(LIVE_QUEUE);
        let client = self.client.clone();
        bridge.spawn(async move {
            let mut first_error = None;
            while let Some((room, frame)) = frames.recv().await {
                if let Err(err) = client.send_live_voice(room, frame).await
                    && first_error.is_none()
                {
                    first_error = Some(format!("live voice not sent: {err}"));
                }
            }
            first_error.map(|err| Update::Outcome(Outcome::Done(Err(err))))
        });
        out
    }

    /// ▶ or ⏹ on a voice message.
    pub(super) fn on_media_action(&mut self, action: MediaAction, bridge: &Bridge<Update>) {
        match action {
            MediaAction::Save(pointer) => self.choose_destination(pointer),
            MediaAction::Stop => {
                self.audio.stop_playing();
                self.voice.playback = None;
            }
            MediaAction::Play(id, pointer) => {
                self.audio.stop_playing();
                self.voice.playback = Some(Playback {
                    id,
                    loading: true,
                    position: Duration::ZERO,
                });
                let client = self.client.clone();
                bridge.spawn(async move {
                    let result = client
                        .download_bytes(&pointer, VOICE_MAX_BYTES, confide_client::no_progress())
                        .await
                        .map_err(|err| format!("cannot play the voice message: {err}"));
                    Some(Update::Outcome(Outcome::VoiceFetched { id, result }))
                });
            }
        }
    }

    /// A voice message to play arrived (or not).
    pub(super) fn on_voice_fetched(&mut self, id: MessageId, result: Result<Vec<u8>, String>) {
        let Some(playback) = self
            .voice
            .playback
            .as_mut()
            .filter(|p| p.id == id && p.loading)
        else {
            return;
        };
        match result {
            Ok(ogg) => {
                playback.loading = false;
                self.audio.play(id, ogg);
            }
            Err(err) => {
                self.voice.playback = None;
                self.status = Some(err);
            }
        }
    }

    /// What the audio thread reports.
    pub fn on_audio(&mut self, update: AudioUpdate, bridge: &Bridge<Update>) {
        match update {
            AudioUpdate::DevicesKnown => {}
            AudioUpdate::Recording { elapsed, level } => {
                if let Some(recording) = &mut self.voice.recording {
                    recording.elapsed = elapsed;
                    recording.level = level;
                }
            }
            AudioUpdate::RecordingFailed(err) => {
                self.voice.recording = None;
                self.status = Some(err);
            }
            AudioUpdate::Recorded { room, result } => match result {
                Ok(clip) => self.send_voice(room, clip, bridge),
                Err(err) => self.status = Some(err),
            },
            AudioUpdate::Playing { id, position, .. } => {
                if let Some(playback) = self.voice.playback.as_mut().filter(|p| p.id == id) {
                    playback.position = position;
                }
            }
            AudioUpdate::Played { id, error } => {
                if self.voice.playback.as_ref().is_some_and(|p| p.id == id) {
                    self.voice.playback = None;
                }
                if let Some(error) = error {
                    self.status = Some(error);
                }
            }
            AudioUpdate::Heard {
                room,
                user,
                latency_ms,
            } => {
                if self.voice.listening.contains(&room) {
                    self.voice
                        .heard
                        .entry(room)
                        .or_default()
                        .insert(user.canonical(), (user, Instant::now()));
                    self.voice.latency.insert(room, latency_ms);
                }
            }
            AudioUpdate::LiveFailed(err) => {
                if self.voice.talking.take().is_some() {
                    self.audio.talk(None);
                }
                self.status = Some(err);
            }
        }
    }

    /// Uploads a recorded voice message and announces it in `room`.
    fn send_voice(&mut self, room: RoomId, clip: Clip, bridge: &Bridge<Update>) {
        let length = clock(Duration::from_millis(u64::from(clip.duration_ms)));
        let (id, progress) = self
            .transfers
            .start(Direction::Upload, &format!("voice message ({length})"));
        let client = self.client.clone();
        bridge.spawn(async move {
            let result = client
                .send_voice(
                    Target::Room(room),
                    clip.ogg,
                    clip.duration_ms,
                    clip.waveform,
                    progress,
                )
                .await
                .map(|_| format!("sent a voice message ({length})"))
                .map_err(|err| format!("not sent: {err}"));
            Some(Update::Outcome(Outcome::Transfer { id, result }))
        });
    }
}
