//! The default microphone and speaker, through cpal.
//!
//! cpal streams cannot move between threads on every platform, so each [`Recorder`],
//! [`Player`] and [`StreamPlayer`] (live audio, pushed as it arrives) owns a thread that opens the device, builds the stream, reports whether that
//! worked, then keeps the stream alive until told to stop. The audio callbacks (on cpal's
//! own thread) convert whatever the device offers (any sample format cpal knows, any channel
//! count, any rate) to or from 48 kHz mono, and share progress through a small mutex.
//!
//! Nothing here panics on a missing or broken device: every cpal error, including "the
//! audio system itself is unavailable", becomes [`NoMicrophone`] or [`NoSpeaker`] with the
//! system's reason. [`availability`] probes both directions without opening a stream, so
//! a UI can grey out its voice buttons with a useful explanation.
//!
//! [`NoMicrophone`]: crate::AudioError::NoMicrophone
//! [`NoSpeaker`]: crate::AudioError::NoSpeaker

mod player;
mod recorder;
mod stream;

use cpal::traits::{DeviceTrait, HostTrait};

pub use player::Player;
pub use recorder::Recorder;
pub use stream::StreamPlayer;

use crate::pcm::SAMPLE_RATE;

/// How long to wait for a device thread to open its stream before giving up.
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The thread that owns one cpal stream: it opens the stream, reports whether that
/// worked, keeps the stream alive while `keep` runs, and drops it when `keep` returns.
/// `keep` gets the channel that [`DeviceThread::shut_down`] (or dropping) closes.
struct DeviceThread {
    stop_tx: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeviceThread {
    /// Starts the thread `name`, which runs `open` and then `keep`; answers what `open`
    /// answered besides the stream, or its reason for failing (also when it does not
    /// answer within [`OPEN_TIMEOUT`], or the thread cannot start).
    fn start<T: Send + 'static>(
        name: &str,
        open: impl FnOnce() -> Result<(cpal::Stream, T), String> + Send + 'static,
        keep: impl FnOnce(&std::sync::mpsc::Receiver<()>) + Send + 'static,
    ) -> Result<(DeviceThread, T), String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let stream = match open() {
                    Ok((stream, opened)) => {
                        let _ = ready_tx.send(Ok(opened));
                        stream
                    }
                    Err(reason) => {
                        let _ = ready_tx.send(Err(reason));
                        return;
                    }
                };
                keep(&stop_rx);
                drop(stream);
            })
            .map_err(|err| format!("cannot start the audio thread: {err}"))?;
        match ready_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(opened)) => Ok((
                DeviceThread {
                    stop_tx: Some(stop_tx),
                    thread: Some(thread),
                },
                opened,
            )),
            Ok(Err(reason)) => {
                let _ = thread.join();
                Err(reason)
            }
            // The thread is stuck in the audio system; leave it behind rather than hang.
            Err(_) => Err("the audio device did not open in time".into()),
        }
    }

    /// Tells the thread to stop and waits until it has dropped the stream.
    fn shut_down(&mut self) {
        if let Some(stop_tx) = self.stop_tx.take() {
            let _ = stop_tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for DeviceThread {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Whether the default microphone and speaker seem usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Availability {
    /// The default input device.
    pub microphone: DeviceStatus,
    /// The default output device.
    pub speaker: DeviceStatus,
}

/// Whether one device seems usable.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceStatus {
    /// The device answered and offers a configuration this crate can use.
    Usable {
        /// The device's name, for display.
        name: String,
    },
    /// The device cannot be used.
    Unavailable {
        /// Why, in words a user can act on (the system's own message included).
        reason: String,
    },
}

impl DeviceStatus {
    /// Whether the device seems usable.
    pub fn is_usable(&self) -> bool {
        matches!(self, DeviceStatus::Usable { .. })
    }

    /// Why the device cannot be used, if it cannot.
    pub fn reason(&self) -> Option<&str> {
        match self {
            DeviceStatus::Usable { .. } => None,
            DeviceStatus::Unavailable { reason } => Some(reason),
        }
    }
}

/// Probes the default microphone and speaker without recording or playing anything.
///
/// A device counts as usable when it exists and reports a stream configuration this crate
/// can convert to and from; opening the stream itself can still fail later (for example
/// when another program holds the device), which [`Recorder::start`] and [`Player::play`]
/// report.
pub fn availability() -> Availability {
    let status = |probe: Result<Opened, String>| match probe {
        Ok(opened) => DeviceStatus::Usable { name: opened.name },
        Err(reason) => DeviceStatus::Unavailable { reason },
    };
    Availability {
        microphone: status(find_device(Direction::Input)),
        speaker: status(find_device(Direction::Output)),
    }
}

/// Which way audio flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Input,
    Output,
}

impl Direction {
    fn noun(self) -> &'static str {
        match self {
            Direction::Input => "audio input",
            Direction::Output => "audio output",
        }
    }
}

/// A default device and the configuration chosen for it.
struct Opened {
    device: cpal::Device,
    name: String,
    config: cpal::SupportedStreamConfig,
}

/// Finds the default device for `direction` and the configuration to open it with.
fn find_device(direction: Direction) -> Result<Opened, String> {
    let host = host()?;
    let device = match direction {
        Direction::Input => host.default_input_device(),
        Direction::Output => host.default_output_device(),
    }
    .ok_or_else(|| format!("no default {} device", direction.noun()))?;
    let name = device
        .description()
        .map(|description| description.name().to_owned())
        .unwrap_or_else(|_| "default".to_owned());
    let ranges: Vec<cpal::SupportedStreamConfigRange> = match direction {
        Direction::Input => device.supported_input_configs().map(Iterator::collect),
        Direction::Output => device.supported_output_configs().map(Iterator::collect),
    }
    .map_err(|err| describe(direction, &name, &err))?;
    let config = choose_config(&ranges).ok_or_else(|| {
        format!(
            "the default {} device \"{name}\" offers no sample format this program can use",
            direction.noun()
        )
    })?;
    Ok(Opened {
        device,
        name,
        config,
    })
}

/// The first audio host that starts, in cpal's order of preference.
///
/// `cpal::default_host` panics when its last-resort host cannot start (ALSA with a broken
/// configuration file, say), so the hosts are started by hand here.
fn host() -> Result<cpal::Host, String> {
    let mut reasons = Vec::new();
    for id in cpal::available_hosts() {
        match cpal::host_from_id(id) {
            Ok(host) => return Ok(host),
            Err(err) => reasons.push(format!("{}: {err}", id.name())),
        }
    }
    if reasons.is_empty() {
        Err("this system has no audio subsystem".to_owned())
    } else {
        Err(format!(
            "the audio system is not available ({})",
            reasons.join("; ")
        ))
    }
}

/// The system's error, with what was being opened.
fn describe(direction: Direction, name: &str, err: &cpal::Error) -> String {
    let hint = match err.kind() {
        cpal::ErrorKind::DeviceBusy => " (another program may be using it)",
        cpal::ErrorKind::PermissionDenied => " (permission denied)",
        _ => "",
    };
    format!(
        "cannot open the {} device \"{name}\": {err}{hint}",
        direction.noun()
    )
}

/// Sample formats the stream callbacks convert, best first.
///
/// 16-bit integers come first: it is what voice hardware delivers natively and more than
/// speech needs, so asking for it spares the audio system a conversion layer. (Conversion
/// layers are not always harmless: alsa-lib's `file` plugin, used by the tests as a virtual
/// microphone, drops input when a format conversion sits on top of it.)
const FORMATS: [cpal::SampleFormat; 7] = [
    cpal::SampleFormat::I16,
    cpal::SampleFormat::F32,
    cpal::SampleFormat::I32,
    cpal::SampleFormat::F64,
    cpal::SampleFormat::U16,
    cpal::SampleFormat::I8,
    cpal::SampleFormat::U8,
];

/// Picks the configuration to open: 48 kHz if possible (no resampling), then the fewest
/// channels (mono needs no mixing), then the preferred sample format.
fn choose_config(
    ranges: &[cpal::SupportedStreamConfigRange],
) -> Option<cpal::SupportedStreamConfig> {
    ranges
        .iter()
        .filter_map(|range| {
            let format_rank = FORMATS.iter().position(|f| *f == range.sample_format())?;
            if range.channels() == 0 {
                return None;
            }
            let rate = SAMPLE_RATE.clamp(range.min_sample_rate(), range.max_sample_rate());
            let off_rate = rate != SAMPLE_RATE;
            Some((
                (off_rate, range.channels(), format_rank),
                range.with_sample_rate(rate),
            ))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, config)| config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpal::{SampleFormat, SupportedBufferSize, SupportedStreamConfigRange};

    fn range(
        channels: u16,
        min: u32,
        max: u32,
        format: SampleFormat,
    ) -> SupportedStreamConfigRange {
        SupportedStreamConfigRange::new(channels, min, max, SupportedBufferSize::Unknown, format)
    }

    #[test]
    fn prefers_48k_then_mono_then_16_bit() {
        let ranges = [
            range(2, 44_100, 44_100, SampleFormat::F32),
            range(2, 8_000, 96_000, SampleFormat::I16),
            range(1, 8_000, 96_000, SampleFormat::I16),
            range(1, 8_000, 96_000, SampleFormat::F32),
            range(1, 8_000, 96_000, SampleFormat::I24),
        ];
        let config = choose_config(&ranges).unwrap();
        assert_eq!((config.channels(), config.sample_rate()), (1, 48_000));
        assert_eq!(config.sample_format(), SampleFormat::I16);
        let config = choose_config(&ranges[3..]).unwrap();
        assert_eq!(config.sample_format(), SampleFormat::F32);
        let config = choose_config(&ranges[..1]).unwrap();
        assert_eq!((config.channels(), config.sample_rate()), (2, 44_100));
        assert!(choose_config(&ranges[4..]).is_none());
        assert!(choose_config(&[]).is_none());
    }
}
