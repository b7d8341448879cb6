//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use confide_audio::SAMPLE_RATE;

/// Whether every tool is on PATH. When one is missing, says so loudly; on CI (`CI=true`,
/// where the setup script installs them) that is a failure rather than a skip.
pub fn tools_available(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| find_on_path(tool).is_none())
        .collect();
    missing.is_empty() || prerequisite_missing(&format!("{} not found on PATH", missing.join(", ")))
}

/// Whether a file the test needs exists, with the same loud skip as [`tools_available`].
pub fn file_available(path: &Path) -> bool {
    path.exists() || prerequisite_missing(&format!("{} does not exist", path.display()))
}

/// Reports a missing prerequisite: a loud skip here, a failure on CI. Returns false.
fn prerequisite_missing(what: &str) -> bool {
    let message = format!(
        "MISSING PREREQUISITE: {what}; run scripts/setup.sh to install it. \
         This test is SKIPPED here and FAILS on CI."
    );
    eprintln!("\n{}\n{message}\n{}\n", "!".repeat(78), "!".repeat(78));
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    false
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Runs a command and panics with its output if it fails.
pub fn run(command: &mut Command) -> std::process::Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A linear chirp from 150 Hz to 3 kHz with a slow tremolo: speech-band, never periodic, so
/// a correlation finds exactly one alignment.
pub fn chirp(seconds: f64, rate: u32) -> Vec<f32> {
    let len = (seconds * f64::from(rate)) as usize;
    let sweep = (3000.0 - 150.0) / seconds;
    (0..len)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let phase = 2.0 * std::f64::consts::PI * (150.0 * t + sweep * t * t / 2.0);
            let tremolo = 0.6 + 0.3 * (2.0 * std::f64::consts::PI * 2.5 * t).sin();
            (0.5 * tremolo * phase.sin()) as f32
        })
        .collect()
}

/// Writes interleaved 16-bit samples as a WAV file.
pub fn write_wav(path: &Path, channels: u16, rate: u32, interleaved: &[f32]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for sample in interleaved {
        writer
            .write_sample((sample.clamp(-1.0, 1.0) * 32_767.0).round() as i16)
            .unwrap();
    }
    writer.finalize().unwrap();
}

/// Reads a raw little-endian 16-bit file as samples.
pub fn read_s16_raw(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(2)
        .map(|pair| f32::from(i16::from_le_bytes([pair[0], pair[1]])) / 32_768.0)
        .collect()
}

/// Samples in `ms` milliseconds at 48 kHz.
pub fn ms(ms: usize) -> usize {
    ms * SAMPLE_RATE as usize / 1000
}
