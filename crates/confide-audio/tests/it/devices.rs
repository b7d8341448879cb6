//! The cpal paths, on a machine without a sound card.
//!
//! ALSA reads its configuration from `ALSA_CONFIG_PATH`, which can only be set for a new
//! process (setting it in-process is unsafe). So each test here writes a configuration,
//! then runs one `#[ignore]`d test of this same binary as a child process with the
//! variable set. The child does the device work and writes what it got to files; the
//! parent checks them. Run on their own, without the marker variable, the children
//! do nothing.
//!
//! The virtual microphone is alsa-lib's `file` plugin over the `null` device: on capture
//! it returns the contents of its `infile` (raw S16_LE, 48 kHz, mono, fixed by the
//! `plug` in front, which converts to whatever cpal asks for), and on playback it writes
//! what it receives to its `file`. The null device has no clock, so the stream runs
//! as fast as the CPU allows.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use confide_audio::{
    AudioError, Player, Recorder, SAMPLE_RATE, StreamPlayer, availability, best_alignment,
    correlation,
};

use crate::support::{chirp, file_available, ms, read_s16_raw};

/// Marks a child process and names the directory it works in.
const CHILD_DIR_VAR: &str = "CONFIDE_AUDIO_TEST_DIR";

/// How long the child records, in audio time.
const RECORD_FOR: Duration = Duration::from_millis(1500);

/// The system's ALSA configuration, which every test configuration includes.
const SYSTEM_ALSA_CONFIG: &str = "/usr/share/alsa/alsa.conf";

/// An ALSA configuration whose default device is the file-backed virtual device.
fn virtual_device_config(infile: &Path, outfile: &Path) -> String {
    format!(
        r#"<{SYSTEM_ALSA_CONFIG}>
pcm.!default {{
    type plug
    slave {{
        pcm {{
            type file
            slave.pcm "null"
            file "{}"
            infile "{}"
            format "raw"
        }}
        format S16_LE
        rate 48000
        channels 1
    }}
}}
"#,
        outfile.display(),
        infile.display()
    )
}

/// Runs the ignored test `name` of this binary with `ALSA_CONFIG_PATH=config`, in `dir`.
fn run_child(name: &str, config: &Path, dir: &Path) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ALSA_CONFIG_PATH", config)
        .env(CHILD_DIR_VAR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("--- child {name} ---\n{text}\n--- end of child ---");
    assert!(
        output.status.success(),
        "child {name} failed: {}",
        output.status
    );
    assert!(
        text.contains("1 passed"),
        "child {name} did not run its test"
    );
    text
}

/// The directory given to a child, or `None` when not running as a child.
fn child_dir() -> Option<PathBuf> {
    let dir = std::env::var_os(CHILD_DIR_VAR).map(PathBuf::from);
    if dir.is_none() {
        eprintln!("run by the parent test in a child process; nothing to do on its own");
    }
    dir
}

fn write_s16_raw(path: &Path, samples: &[f32]) {
    let bytes: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32_767.0).round() as i16).to_le_bytes())
        .collect();
    std::fs::write(path, bytes).unwrap();
}

fn write_f32_raw(path: &Path, samples: &[f32]) {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_f32_raw(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn virtual_microphone_records_its_source() {
    if !file_available(Path::new(SYSTEM_ALSA_CONFIG)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Longer than the recording: past the end of `infile` the plugin returns stale data.
    let source = chirp(3.0, SAMPLE_RATE);
    write_s16_raw(&dir.path().join("source.raw"), &source);
    let config = dir.path().join("asound.conf");
    std::fs::write(
        &config,
        virtual_device_config(&dir.path().join("source.raw"), &dir.path().join("sink.raw")),
    )
    .unwrap();

    run_child(
        "devices::child_records_the_virtual_microphone",
        &config,
        dir.path(),
    );

    let recorded = read_f32_raw(&dir.path().join("recorded.f32"));
    assert!(
        recorded.len() >= ms(1500),
        "recorded only {} samples",
        recorded.len()
    );
    let compared = &recorded[..ms(1500)];
    let alignment = best_alignment(&source[..ms(1500)], compared, ms(250));
    println!(
        "virtual microphone: {} samples recorded, correlation {:.4} at a lag of {} samples",
        recorded.len(),
        alignment.correlation,
        alignment.lag
    );
    // alsa-lib hands over the file exactly, so anything short of a near-perfect match means
    // the recorder lost or reordered samples.
    assert!(alignment.correlation > 0.95, "{alignment:?}");
}

#[test]
#[ignore = "run by virtual_microphone_records_its_source in a child process"]
fn child_records_the_virtual_microphone() {
    let Some(dir) = child_dir() else { return };
    let status = availability();
    println!("availability: {status:?}");
    assert!(status.microphone.is_usable() && status.speaker.is_usable());
    let recorder = Recorder::start().unwrap();
    println!("recording from {:?}", recorder.device_name());
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorder.elapsed() < RECORD_FOR && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let recorded = recorder.stop().unwrap();
    println!(
        "recorded {} samples ({} ms)",
        recorded.len(),
        recorded.duration_ms()
    );
    write_f32_raw(&dir.join("recorded.f32"), recorded.samples());
}

#[test]
fn virtual_speaker_plays_the_samples() {
    if !file_available(Path::new(SYSTEM_ALSA_CONFIG)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("asound.conf");
    std::fs::write(
        &config,
        virtual_device_config(Path::new("/dev/null"), &dir.path().join("sink.raw")),
    )
    .unwrap();

    run_child(
        "devices::child_plays_on_the_virtual_speaker",
        &config,
        dir.path(),
    );

    let played = read_s16_raw(&dir.path().join("sink.raw"));
    let source = chirp(1.0, SAMPLE_RATE);
    let similarity = correlation(&source, &played, ms(250));
    println!(
        "virtual speaker: {} samples written, correlation {similarity:.4}",
        played.len()
    );
    assert!(played.len() >= source.len());
    assert!(similarity > 0.9, "correlation {similarity}");
}

#[test]
#[ignore = "run by virtual_speaker_plays_the_samples in a child process"]
fn child_plays_on_the_virtual_speaker() {
    if child_dir().is_none() {
        return;
    }
    let player = Player::play(chirp(1.0, SAMPLE_RATE)).unwrap();
    println!("playing on {:?}", player.device_name());
    assert!(
        player.wait(Duration::from_secs(10)),
        "playback did not finish"
    );
    println!(
        "finished at {:?} of {:?}, error {:?}",
        player.position(),
        player.total(),
        player.error()
    );
    assert_eq!(player.position(), player.total());
    player.stop();
}

#[test]
fn virtual_speaker_streams_pushed_samples() {
    if !file_available(Path::new(SYSTEM_ALSA_CONFIG)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("asound.conf");
    std::fs::write(
        &config,
        virtual_device_config(Path::new("/dev/null"), &dir.path().join("sink.raw")),
    )
    .unwrap();
    run_child(
        "devices::child_streams_on_the_virtual_speaker",
        &config,
        dir.path(),
    );
    let played = read_s16_raw(&dir.path().join("sink.raw"));
    let source = chirp(1.0, SAMPLE_RATE);
    // The device played silence before the push, as much as the CPU allowed (the null
    // device has no clock): look for the chirp anywhere in what was played.
    let similarity = correlation(&source, &played, played.len());
    println!(
        "streamed: {} samples written, correlation {similarity:.4}",
        played.len()
    );
    assert!(similarity > 0.9, "correlation {similarity}");
}

#[test]
#[ignore = "run by virtual_speaker_streams_pushed_samples in a child process"]
fn child_streams_on_the_virtual_speaker() {
    if child_dir().is_none() {
        return;
    }
    let player = StreamPlayer::start().unwrap();
    let source = chirp(1.0, SAMPLE_RATE);
    // The null device has no clock: it drains as fast as the CPU allows, so pieces
    // pushed one by one would have silence between them whenever the callback runs in
    // between. One push of the whole second plays without a gap.
    player.push(&source);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !player.queued().is_zero() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(player.queued().is_zero(), "the queue did not drain");
    assert_eq!(player.dropped(), 0);
    assert_eq!(player.error(), None);
    // More than a second at once keeps only the newest second.
    player.push(&vec![0.0; SAMPLE_RATE as usize * 3]);
    assert!(player.dropped() > 0);
    assert!(player.queued() <= Duration::from_secs(1));
    player.stop();
}

#[test]
fn missing_devices_are_errors_not_panics() {
    if !file_available(Path::new(SYSTEM_ALSA_CONFIG)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let configs = [
        (
            "no-such-pcm",
            "</usr/share/alsa/alsa.conf>\npcm.!default \"confide_no_such_device\"\n",
        ),
        (
            "no-such-card",
            "</usr/share/alsa/alsa.conf>\npcm.!default { type hw card 42 }\n",
        ),
        ("broken-syntax", "pcm.!default { type plug slave {{{ \n"),
    ];
    for (name, text) in configs {
        let config = dir.path().join(format!("{name}.conf"));
        std::fs::write(&config, text).unwrap();
        run_child("devices::child_finds_no_device", &config, dir.path());
    }
}

#[test]
#[ignore = "run by missing_devices_are_errors_not_panics in a child process"]
fn child_finds_no_device() {
    if child_dir().is_none() {
        return;
    }
    let status = availability();
    println!("microphone: {:?}", status.microphone.reason());
    println!("speaker: {:?}", status.speaker.reason());
    assert!(!status.microphone.is_usable() && !status.speaker.is_usable());
    assert!(!status.microphone.reason().unwrap_or_default().is_empty());
    let err = Recorder::start().unwrap_err();
    println!("Recorder::start: {err}");
    assert!(matches!(err, AudioError::NoMicrophone(_)), "{err}");
    let err = Player::play(vec![0.0; 480]).unwrap_err();
    println!("Player::play: {err}");
    assert!(matches!(err, AudioError::NoSpeaker(_)), "{err}");
    let err = StreamPlayer::start().unwrap_err();
    println!("StreamPlayer::start: {err}");
    assert!(matches!(err, AudioError::NoSpeaker(_)), "{err}");
}

#[test]
fn this_machine_default_devices_never_panic() {
    // Whatever this machine has (on CI: no sound card at all), asking is safe.
    let status = availability();
    println!("this machine: {status:?}");
    if let Some(reason) = status.microphone.reason() {
        assert!(!reason.is_empty());
        assert!(matches!(
            Recorder::start(),
            Err(AudioError::NoMicrophone(_))
        ));
    }
}
