//! Real speech (espeak-ng) through WAV reading, resampling and the Opus codec.

use std::process::Command;

use confide_audio::{FRAME_SAMPLES, correlation, decode_ogg_opus, encode_ogg_opus, read_wav_file};

use crate::support::{ms, run, tools_available};

const SENTENCE: &str =
    "Confide keeps your voice messages private. The quick brown fox jumps over the lazy dog.";

#[test]
fn speech_survives_the_codec() {
    if !tools_available(&["espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let espeak_wav = dir.path().join("espeak.wav");
    let sox_wav = dir.path().join("speech48k.wav");
    run(Command::new("espeak-ng")
        .arg("-w")
        .arg(&espeak_wav)
        .arg(SENTENCE));
    run(Command::new("sox")
        .arg(&espeak_wav)
        .args(["-r", "48000", "-c", "1"])
        .arg(&sox_wav));

    let espeak_spec = hound::WavReader::open(&espeak_wav).unwrap().spec();
    println!(
        "espeak-ng writes {} Hz, {} channel(s)",
        espeak_spec.sample_rate, espeak_spec.channels
    );

    // sox's resampler is the reference for ours.
    let reference = read_wav_file(&sox_wav).unwrap();
    let ours = read_wav_file(&espeak_wav).unwrap();
    let resampler_match = correlation(reference.samples(), ours.samples(), ms(5));
    println!(
        "resampled {} Hz speech: ours {} samples, sox {} samples, correlation {resampler_match:.4}",
        espeak_spec.sample_rate,
        ours.len(),
        reference.len()
    );
    assert!(ours.len().abs_diff(reference.len()) <= 2);
    assert!(
        resampler_match > 0.98,
        "resampler correlation {resampler_match}"
    );

    for (name, speech) in [("sox 48 kHz", &reference), ("our resampler", &ours)] {
        let encoded = encode_ogg_opus(speech.samples()).unwrap();
        let decoded = decode_ogg_opus(&encoded).unwrap();
        let similarity = correlation(speech.samples(), decoded.samples(), FRAME_SAMPLES);
        println!(
            "speech via {name}: {} ms, {} bytes of Opus, correlation after the codec {similarity:.4}",
            speech.duration_ms(),
            encoded.len()
        );
        assert!(similarity > 0.8, "{name}: correlation {similarity}");
        assert!(decoded.len().abs_diff(speech.len()) <= FRAME_SAMPLES);
        let summary = decoded.summary(48);
        assert_eq!(summary.waveform.len(), 48);
        assert!(
            summary.waveform.iter().filter(|&&v| v > 128).count() > 10,
            "{:?}",
            summary.waveform
        );
    }
}
