//! Sound for the chat screen, on a thread of its own: recording and encoding voice
//! messages, playing them, and live voice (capturing, cutting into 20 ms frames and
//! encoding what this user says; decoding, mixing and playing what the others say).
//!
//! The window only sends [`Audio`] commands (a channel send, never a wait) and draws what
//! comes back as [`AudioUpdate`]s through the bridge. Devices can take seconds to open,
//! Opus encoding takes CPU: none of it may hold up a frame. The network is not touched
//! here either: live frames to send go into a channel that a task of the chat screen
//! drains, and voice messages are handed back to the screen, which uploads them.
//!
//! Which devices exist is asked once, when the thread starts ([`Audio::devices`]); a
//! machine without a sound card gets its buttons disabled with the system's reason.
//!
//! Live playback: incoming voice is decoded into a queue per speaker; once a little is
//! queued (a 60 ms jitter buffer), each tick mixes what the speakers queued and pushes it
//! to one `confide_audio::StreamPlayer`, which stays open while anyone talks and closes
//! after a second of quiet.

use crate::app::Update;
use crate::bridge::Delivery;
use confide_audio::{
    Availability, DeviceStatus, FRAME_SAMPLES, LiveDecoder, LiveEncoder, Player, Recorder,
    SAMPLE_RATE, StreamPlayer, VoiceSummary,
};
use confide_crypto::payload::MessageId;
use confide_crypto::voice::VoiceFrame;
use confide_proto::{RoomId, UserName};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// How often the thread looks at its devices while something is going on.
const TICK: Duration = Duration::from_millis(10);

/// How often progress (recording length, playback position) is reported to the window.
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// How often each speaker's latency is reported to the window.
const HEARD_EVERY: Duration = Duration::from_millis(250);

/// Audio buffered before live playback starts, to ride out uneven arrival (60 ms).
const JITTER_SAMPLES: usize = 3 * FRAME_SAMPLES;

/// Live audio queued per speaker at most (1 s); older audio is dropped to keep the
/// delay bounded when the output falls behind.
const MAX_QUEUED: usize = SAMPLE_RATE as usize;

/// A gap in a speaker's frames longer than this is a pause, not lost frames.
const PAUSE_MS: u64 = 200;

/// A live capture is restarted after this much audio (5 min), since the recorder keeps
/// everything it captured.
const MAX_TALK_SAMPLES: usize = 5 * 60 * SAMPLE_RATE as usize;

/// The waveform's resolution in a voice message.
const WAVEFORM_BUCKETS: usize = confide_audio::MAX_WAVEFORM_BUCKETS;

/// Milliseconds of one live frame.
const FRAME_MS: u64 = FRAME_SAMPLES as u64 * 1000 / SAMPLE_RATE as u64;

/// Where this user's live frames go: the chat screen's task sends them in order.
pub type LiveOut = tokio::sync::mpsc::Sender<(RoomId, VoiceFrame)>;

/// A recorded voice message, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    /// Ogg Opus.
    pub ogg: Vec<u8>,
    /// Its length.
    pub duration_ms: u32,
    /// Its loudness in up to 64 buckets.
    pub waveform: Vec<u8>,
}

/// What the audio thread reports.
#[derive(Debug)]
pub enum AudioUpdate {
    /// The devices were probed ([`Audio::devices`] has the answer).
    DevicesKnown,
    /// A voice message is being recorded.
    Recording {
        /// Recorded so far.
        elapsed: Duration,
        /// The last 50 ms's peak, 0 to 1.
        level: f32,
    },
    /// Recording could not start.
    RecordingFailed(String),
    /// A voice message finished recording and was encoded (or not).
    Recorded {
        /// The room to send it to.
        room: RoomId,
        /// The clip, or why there is none.
        result: Result<Clip, String>,
    },
    /// A voice message is playing.
    Playing {
        /// Which.
        id: MessageId,
        /// How far it got.
        position: Duration,
        /// How long it is.
        total: Duration,
    },
    /// A voice message stopped playing.
    Played {
        /// Which.
        id: MessageId,
        /// Why it stopped early, if it did.
        error: Option<String>,
    },
    /// Someone's live voice arrived.
    Heard {
        /// Where.
        room: RoomId,
        /// Who is talking.
        user: UserName,
        /// From their capture to our playback, as far as the clocks tell.
        latency_ms: u64,
    },
    /// Live voice stopped because of a device or codec error.
    LiveFailed(String),
}

/// What the window asks of the audio thread.
enum Command {
    StartRecording,
    FinishRecording {
        send_to: Option<RoomId>,
    },
    Play {
        id: MessageId,
        ogg: Vec<u8>,
    },
    StopPlaying,
    Talk(Option<(RoomId, LiveOut)>),
    Heard {
        room: RoomId,
        user: UserName,
        frame: VoiceFrame,
    },
    Hear {
        room: RoomId,
        on: bool,
    },
    Reset,
}

/// The window's side of the audio thread. Cloning it gives another sender to the same
/// thread; the thread ends when every clone is gone.
#[derive(Clone)]
pub struct Audio {
    commands: mpsc::Sender<Command>,
    devices: Arc<OnceLock<Availability>>,
}

impl Audio {
    /// Starts the audio thread, which first probes the devices, then reports through
    /// `delivery`.
    #[must_use]
    pub fn start(delivery: Delivery<Update>) -> Audio {
        let (commands, receiver) = mpsc::channel();
        let devices = Arc::new(OnceLock::new());
        let shared = Arc::clone(&devices);
        let spawned = std::thread::Builder::new()
            .name("confide-gui-audio".to_owned())
            .spawn(move || {
                let _ = shared.set(confide_audio::availability());
                delivery.send(Update::Audio(AudioUpdate::DevicesKnown));
                Worker::new(delivery).run(&receiver);
            });
        if let Err(err) = spawned {
            let reason = format!("cannot start the audio thread: {err}");
            let _ = devices.set(Availability {
                microphone: unavailable(&reason),
                speaker: unavailable(&reason),
            });
        }
        Audio { commands, devices }
    }

    /// The devices, once probed.
    #[must_use]
    pub fn devices(&self) -> Option<&Availability> {
        self.devices.get()
    }

    /// `Ok` if the microphone can be used, else why not (for the disabled button's
    /// hover text).
    ///
    /// # Errors
    /// The reason, while probing or when there is no usable microphone.
    pub fn microphone(&self) -> Result<(), String> {
        usable(self.devices().map(|d| &d.microphone), "microphone")
    }

    /// `Ok` if the speaker can be used, else why not.
    ///
    /// # Errors
    /// The reason, while probing or when there is no usable speaker.
    pub fn speaker(&self) -> Result<(), String> {
        usable(self.devices().map(|d| &d.speaker), "speaker")
    }

    fn send(&self, command: Command) {
        // The thread only ends with the app, or if it could not start (then the devices
        // read as unavailable and nothing is asked of it).
        let _ = self.commands.send(command);
    }

    /// Starts recording a voice message.
    pub fn start_recording(&self) {
        self.send(Command::StartRecording);
    }

    /// Stops recording; with a room, encodes the recording for it
    /// ([`AudioUpdate::Recorded`]), else throws it away.
    pub fn finish_recording(&self, send_to: Option<RoomId>) {
        self.send(Command::FinishRecording { send_to });
    }

    /// Plays a voice message (Ogg Opus), stopping any other.
    pub fn play(&self, id: MessageId, ogg: Vec<u8>) {
        self.send(Command::Play { id, ogg });
    }

    /// Stops the voice message playing.
    pub fn stop_playing(&self) {
        self.send(Command::StopPlaying);
    }

    /// Captures this user's voice for a room, frame by frame into `out`; `None` stops.
    pub fn talk(&self, to: Option<(RoomId, LiveOut)>) {
        self.send(Command::Talk(to));
    }

    /// Someone's live voice, to decode and play.
    pub fn heard(&self, room: RoomId, user: UserName, frame: VoiceFrame) {
        self.send(Command::Heard { room, user, frame });
    }

    /// Plays a room's live voice from now on, or stops and drops what is queued.
    pub fn hear(&self, room: RoomId, on: bool) {
        self.send(Command::Hear { room, on });
    }

    /// Stops everything (the chat screen closed).
    pub fn reset(&self) {
        self.send(Command::Reset);
    }
}

fn unavailable(reason: &str) -> DeviceStatus {
    DeviceStatus::Unavailable {
        reason: reason.to_owned(),
    }
}

fn usable(status: Option<&DeviceStatus>, what: &str) -> Result<(), String> {
    match status {
        None => Err("checking the audio devices…".to_owned()),
        Some(status) if status.is_usable() => Ok(()),
        Some(status) => Err(format!(
            "no usable {what}: {}",
            status.reason().unwrap_or("unknown reason")
        )),
    }
}

/// Milliseconds since the Unix epoch (what live frames are stamped with).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn samples_ms(samples: usize) -> u64 {
    samples as u64 * 1000 / u64::from(SAMPLE_RATE)
}

/// Cuts a growing recording into 20 ms frames stamped with their capture time.
#[derive(Debug)]
struct Framer {
    /// When the recording's first sample was captured.
    started_ms: u64,
    /// Samples of the recording already taken.
    taken: usize,
    /// Taken samples not yet in a frame.
    partial: Vec<f32>,
    /// Frames made so far.
    frames: u64,
}

impl Framer {
    fn new(started_ms: u64) -> Framer {
        Framer {
            started_ms,
            taken: 0,
            partial: Vec::with_capacity(FRAME_SAMPLES),
            frames: 0,
        }
    }

    /// Takes the recording's new samples; answers each whole frame with its capture time.
    fn push(&mut self, new: &[f32]) -> Vec<(u64, Vec<f32>)> {
        self.taken += new.len();
        let mut frames = Vec::new();
        for sample in new {
            self.partial.push(*sample);
            if self.partial.len() == FRAME_SAMPLES {
                let at = self.started_ms + self.frames * FRAME_MS;
                frames.push((at, std::mem::take(&mut self.partial)));
                self.partial.reserve(FRAME_SAMPLES);
                self.frames += 1;
            }
        }
        frames
    }
}

/// Frames lost between the one expected at `expected_ms` and one captured at
/// `captured_ms`: none for a frame on time, none after a pause.
fn lost_frames(expected_ms: Option<u64>, captured_ms: u64) -> usize {
    let Some(expected) = expected_ms else {
        return 0;
    };
    let late = captured_ms.saturating_sub(expected);
    if late > PAUSE_MS {
        return 0;
    }
    // Half a frame of clock jitter is not a loss.
    usize::try_from((late + FRAME_MS / 2) / FRAME_MS).unwrap_or(0)
}

/// Takes up to `max` samples from the front of each queue and adds them up.
fn mix<'a>(queues: impl Iterator<Item = &'a mut VecDeque<f32>>, max: usize) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::new();
    for queue in queues {
        let take = queue.len().min(max);
        if out.len() < take {
            out.resize(take, 0.0);
        }
        for (slot, sample) in out.iter_mut().zip(queue.drain(..take)) {
            *slot += sample;
        }
    }
    for sample in &mut out {
        *sample = sample.clamp(-1.0, 1.0);
    }
    out
}

/// One person's live voice as received.
struct Speaker {
    decoder: LiveDecoder,
    queue: VecDeque<f32>,
    /// When the next frame should have been captured.
    expected_ms: Option<u64>,
    last_arrival: Instant,
    last_report: Option<Instant>,
}

/// This user talking into a room.
struct Talk {
    room: RoomId,
    out: LiveOut,
    recorder: Recorder,
    encoder: LiveEncoder,
    framer: Framer,
}

struct Worker {
    delivery: Delivery<Update>,
    recording: Option<Recorder>,
    playing: Option<(MessageId, Player)>,
    talk: Option<Talk>,
    /// Rooms whose speaker is on.
    hearing: HashSet<RoomId>,
    speakers: HashMap<(RoomId, UserName), Speaker>,
    live_player: Option<StreamPlayer>,
    /// Live playback failed; nothing more is tried until the next reset of a room.
    live_failed: bool,
    last_report: Instant,
}

impl Worker {
    fn new(delivery: Delivery<Update>) -> Worker {
        Worker {
            delivery,
            recording: None,
            playing: None,
            talk: None,
            hearing: HashSet::new(),
            speakers: HashMap::new(),
            live_player: None,
            live_failed: false,
            last_report: Instant::now(),
        }
    }

    fn report(&self, update: AudioUpdate) {
        self.delivery.send(Update::Audio(update));
    }

    fn busy(&self) -> bool {
        self.recording.is_some()
            || self.playing.is_some()
            || self.talk.is_some()
            || self.live_player.is_some()
            || self.speakers.values().any(|s| !s.queue.is_empty())
    }

    fn run(mut self, commands: &mpsc::Receiver<Command>) {
        loop {
            let command = if self.busy() {
                match commands.recv_timeout(TICK) {
                    Ok(command) => Some(command),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match commands.recv() {
                    Ok(command) => Some(command),
                    Err(_) => break,
                }
            };
            if let Some(command) = command {
                self.handle(command);
            }
            self.tick();
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::StartRecording => {
                self.recording = None;
                match Recorder::start() {
                    Ok(recorder) => {
                        self.recording = Some(recorder);
                        self.report(AudioUpdate::Recording {
                            elapsed: Duration::ZERO,
                            level: 0.0,
                        });
                    }
                    Err(err) => {
                        self.report(AudioUpdate::RecordingFailed(format!(
                            "cannot record: {err}"
                        )));
                    }
                }
            }
            Command::FinishRecording { send_to } => {
                let Some(recorder) = self.recording.take() else {
                    return;
                };
                let pcm = recorder.stop();
                if let Some(room) = send_to {
                    let result = pcm
                        .map_err(|err| format!("cannot record: {err}"))
                        .and_then(|pcm| encode_clip(pcm.samples()));
                    self.report(AudioUpdate::Recorded { room, result });
                }
            }
            Command::Play { id, ogg } => {
                self.playing = None;
                let started = confide_audio::decode_ogg_opus(&ogg)
                    .map_err(|err| format!("cannot play the voice message: {err}"))
                    .and_then(|pcm| Player::play(pcm).map_err(|err| format!("cannot play: {err}")));
                match started {
                    Ok(player) => self.playing = Some((id, player)),
                    Err(error) => self.report(AudioUpdate::Played {
                        id,
                        error: Some(error),
                    }),
                }
            }
            Command::StopPlaying => {
                if let Some((id, player)) = self.playing.take() {
                    player.stop();
                    self.report(AudioUpdate::Played { id, error: None });
                }
            }
            Command::Talk(to) => {
                self.talk = None;
                if let Some((room, out)) = to {
                    match start_talk(room, out) {
                        Ok(talk) => self.talk = Some(talk),
                        Err(err) => self.report(AudioUpdate::LiveFailed(err)),
                    }
                }
            }
            Command::Heard { room, user, frame } => self.on_heard(room, user, &frame),
            Command::Hear { room, on } => {
                if on {
                    self.hearing.insert(room);
                } else {
                    self.hearing.remove(&room);
                    self.speakers.retain(|(r, _), _| *r != room);
                }
                self.live_failed = false;
            }
            Command::Reset => {
                self.recording = None;
                self.playing = None;
                self.talk = None;
                self.hearing.clear();
                self.speakers.clear();
                self.live_player = None;
                self.live_failed = false;
            }
        }
    }

    fn on_heard(&mut self, room: RoomId, user: UserName, frame: &VoiceFrame) {
        // Frames still on their way after the speaker was switched off are dropped.
        if self.live_failed || !self.hearing.contains(&room) {
            return;
        }
        let key = (room, user);
        if !self.speakers.contains_key(&key) {
            match LiveDecoder::new() {
                Ok(decoder) => {
                    self.speakers.insert(
                        key.clone(),
                        Speaker {
                            decoder,
                            queue: VecDeque::new(),
                            expected_ms: None,
                            last_arrival: Instant::now(),
                            last_report: None,
                        },
                    );
                }
                Err(err) => {
                    self.live_failed = true;
                    self.report(AudioUpdate::LiveFailed(format!(
                        "cannot decode live voice: {err}"
                    )));
                    return;
                }
            }
        }
        let playing_left = self
            .live_player
            .as_ref()
            .map_or(Duration::ZERO, StreamPlayer::queued);
        let Some(speaker) = self.speakers.get_mut(&key) else {
            return;
        };
        let now = Instant::now();
        speaker.last_arrival = now;
        // Lost frames are filled in by the decoder, so what follows keeps its pace.
        for _ in 0..lost_frames(speaker.expected_ms, frame.captured_at_ms) {
            if let Ok(filled) = speaker.decoder.conceal() {
                speaker.queue.extend(filled);
            }
        }
        let ahead_ms = samples_ms(speaker.queue.len())
            + u64::try_from(playing_left.as_millis()).unwrap_or(u64::MAX);
        for packet in &frame.packets {
            match speaker.decoder.decode(packet) {
                Ok(samples) => speaker.queue.extend(samples),
                Err(err) => tracing::debug!(cause = %err, "undecodable live voice packet"),
            }
        }
        speaker.expected_ms =
            Some(frame.captured_at_ms + FRAME_MS * frame.packets.len().max(1) as u64);
        let excess = speaker.queue.len().saturating_sub(MAX_QUEUED);
        speaker.queue.drain(..excess);
        if speaker
            .last_report
            .is_none_or(|at| now.duration_since(at) >= HEARD_EVERY)
        {
            speaker.last_report = Some(now);
            let latency_ms = now_ms().saturating_sub(frame.captured_at_ms) + ahead_ms;
            let (room, user) = key;
            self.report(AudioUpdate::Heard {
                room,
                user,
                latency_ms,
            });
        }
    }

    fn tick(&mut self) {
        let report_now = self.last_report.elapsed() >= REPORT_EVERY;
        if report_now {
            self.last_report = Instant::now();
        }
        if let Some(recorder) = &self.recording
            && report_now
        {
            self.report(AudioUpdate::Recording {
                elapsed: recorder.elapsed(),
                level: recorder.level(),
            });
        }
        if let Some((id, player)) = &self.playing {
            let id = *id;
            if player.is_finished() {
                let error = player.error();
                self.playing = None;
                self.report(AudioUpdate::Played { id, error });
            } else if report_now {
                self.report(AudioUpdate::Playing {
                    id,
                    position: player.position(),
                    total: player.total(),
                });
            }
        }
        self.tick_talk();
        self.tick_live_output();
    }

    /// Sends the newly captured frames of this user's live voice.
    fn tick_talk(&mut self) {
        let Some(talk) = &mut self.talk else {
            return;
        };
        let new = talk.recorder.samples_from(talk.framer.taken);
        for (captured_at_ms, samples) in talk.framer.push(&new) {
            let packet = match talk.encoder.encode(&samples) {
                Ok(packet) => packet,
                Err(err) => {
                    tracing::debug!(cause = %err, "cannot encode a live frame");
                    continue;
                }
            };
            let frame = VoiceFrame {
                captured_at_ms,
                packets: vec![packet],
            };
            // Live voice is lossy by design: a full queue drops the frame.
            if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                talk.out.try_send((talk.room, frame))
            {
                self.talk = None;
                return;
            }
        }
        let error = talk.recorder.error();
        if talk.framer.taken >= MAX_TALK_SAMPLES || error.is_some() {
            let (room, out) = (talk.room, talk.out.clone());
            self.talk = None;
            if let Some(error) = error {
                self.report(AudioUpdate::LiveFailed(error));
                return;
            }
            match start_talk(room, out) {
                Ok(talk) => self.talk = Some(talk),
                Err(err) => self.report(AudioUpdate::LiveFailed(err)),
            }
        }
    }

    /// Pushes what the speakers queued to the live output, opening it after a little
    /// audio has gathered and closing it after a second of quiet.
    fn tick_live_output(&mut self) {
        let queued = self
            .speakers
            .values()
            .map(|s| s.queue.len())
            .max()
            .unwrap_or(0);
        let quiet_for = self
            .speakers
            .values()
            .map(|s| s.last_arrival.elapsed())
            .min()
            .unwrap_or(Duration::MAX);
        if queued == 0 {
            let drained = self
                .live_player
                .as_ref()
                .is_none_or(|player| player.queued().is_zero());
            if drained && quiet_for > Duration::from_secs(1) {
                self.live_player = None;
            }
            return;
        }
        if self.live_player.is_none() {
            // Starting after silence: wait for a little audio first, unless nothing
            // more is coming.
            let quiet = quiet_for > Duration::from_millis(FRAME_MS * 3);
            if queued < JITTER_SAMPLES && !quiet {
                return;
            }
            match StreamPlayer::start() {
                Ok(player) => self.live_player = Some(player),
                Err(err) => {
                    self.speakers.clear();
                    self.live_failed = true;
                    self.report(AudioUpdate::LiveFailed(format!(
                        "cannot play live voice: {err}"
                    )));
                    return;
                }
            }
        }
        let buffer = mix(self.speakers.values_mut().map(|s| &mut s.queue), queued);
        if let Some(player) = &self.live_player {
            player.push(&buffer);
            if let Some(error) = player.error() {
                self.live_player = None;
                self.speakers.clear();
                self.live_failed = true;
                self.report(AudioUpdate::LiveFailed(format!(
                    "cannot play live voice: {error}"
                )));
            }
        }
    }
}

fn start_talk(room: RoomId, out: LiveOut) -> Result<Talk, String> {
    let encoder = LiveEncoder::new().map_err(|err| format!("cannot encode live voice: {err}"))?;
    let recorder = Recorder::start().map_err(|err| format!("cannot talk: {err}"))?;
    Ok(Talk {
        room,
        out,
        recorder,
        encoder,
        framer: Framer::new(now_ms()),
    })
}

/// Encodes a recording as a voice message.
fn encode_clip(samples: &[f32]) -> Result<Clip, String> {
    if samples.is_empty() {
        return Err("nothing was recorded".to_owned());
    }
    let ogg = confide_audio::encode_ogg_opus(samples)
        .map_err(|err| format!("cannot encode the voice message: {err}"))?;
    let summary = VoiceSummary::new(samples, WAVEFORM_BUCKETS);
    Ok(Clip {
        ogg,
        duration_ms: u32::try_from(summary.duration_ms).unwrap_or(u32::MAX),
        waveform: summary.waveform,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_is_cut_into_frames_stamped_with_their_capture_time() {
        let mut framer = Framer::new(1_000);
        assert!(framer.push(&[0.1; 500]).is_empty());
        let frames = framer.push(&[0.2; 2000]);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].0, 1_000);
        assert_eq!(frames[1].0, 1_020);
        assert!(frames.iter().all(|(_, f)| f.len() == FRAME_SAMPLES));
        assert_eq!(frames[0].1[499..501], [0.1, 0.2]);
        assert_eq!(framer.taken, 2500);
        let frames = framer.push(&[0.3; 380]);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, 1_040);
    }

    #[test]
    fn late_frames_count_as_lost_but_pauses_do_not() {
        assert_eq!(lost_frames(None, 5_000), 0);
        assert_eq!(lost_frames(Some(1_000), 1_000), 0);
        assert_eq!(lost_frames(Some(1_000), 1_005), 0, "jitter");
        assert_eq!(lost_frames(Some(1_000), 1_020), 1);
        assert_eq!(lost_frames(Some(1_000), 1_060), 3);
        assert_eq!(lost_frames(Some(1_000), 2_000), 0, "a pause");
        assert_eq!(lost_frames(Some(1_000), 900), 0, "early");
    }

    #[test]
    fn speakers_are_mixed_and_clamped() {
        let mut a: VecDeque<f32> = [0.5, 0.5, 0.5].into_iter().collect();
        let mut b: VecDeque<f32> = [0.75, -0.25].into_iter().collect();
        let mixed = mix([&mut a, &mut b].into_iter(), 3);
        assert_eq!(mixed, [1.0, 0.25, 0.5]);
        assert!(a.is_empty() && b.is_empty());
        let mut c: VecDeque<f32> = [0.1; 10].into_iter().collect();
        assert_eq!(mix(std::iter::once(&mut c), 4).len(), 4);
        assert_eq!(c.len(), 6);
    }

    #[test]
    fn a_clip_has_its_length_and_waveform() {
        let tone: Vec<f32> = (0..SAMPLE_RATE as usize / 2)
            .map(|i| 0.3 * (i as f32 * 0.05).sin())
            .collect();
        let clip = encode_clip(&tone).unwrap();
        assert_eq!(clip.duration_ms, 500);
        assert_eq!(clip.waveform.len(), WAVEFORM_BUCKETS);
        assert!(clip.ogg.starts_with(b"OggS"));
        assert!(encode_clip(&[]).is_err());
    }

    #[test]
    fn device_reasons_read_well() {
        assert!(usable(None, "microphone").unwrap_err().contains("checking"));
        let missing = unavailable("no default audio input device");
        assert_eq!(
            usable(Some(&missing), "microphone").unwrap_err(),
            "no usable microphone: no default audio input device"
        );
    }
}
