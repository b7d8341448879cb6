//! Ogg Opus voice messages: round trips, the standard tools, and hostile input.

use std::io::Cursor;
use std::process::Command;

use confide_audio::{
    AudioError, FRAME_SAMPLES, SAMPLE_RATE, correlation, decode_ogg_opus, encode_ogg_opus,
    read_wav, read_wav_file,
};

use crate::support::{chirp, ms, run, tools_available, write_wav};

fn tones(seconds: f64) -> Vec<f32> {
    let len = (seconds * f64::from(SAMPLE_RATE)) as usize;
    (0..len)
        .map(|i| {
            let t = i as f32 / SAMPLE_RATE as f32;
            let tone = |freq: f32| (2.0 * std::f32::consts::PI * freq * t).sin();
            0.25 * tone(220.0) + 0.15 * tone(660.0) + 0.1 * tone(1_375.0)
        })
        .collect()
}

#[test]
fn synthetic_signals_survive_a_round_trip() {
    for (name, input) in [("chirp", chirp(2.0, SAMPLE_RATE)), ("tones", tones(1.3))] {
        let encoded = encode_ogg_opus(&input).unwrap();
        let decoded = decode_ogg_opus(&encoded).unwrap();
        let similarity = correlation(&input, decoded.samples(), FRAME_SAMPLES);
        println!(
            "{name}: {} bytes for {} ms, correlation {similarity:.4}",
            encoded.len(),
            decoded.duration_ms()
        );
        assert!(similarity > 0.9, "{name}: correlation {similarity}");
        assert!(
            decoded.len().abs_diff(input.len()) <= FRAME_SAMPLES,
            "{name}: {} vs {}",
            decoded.len(),
            input.len()
        );
        // About 32 kbit/s plus Ogg overhead.
        let kbits_per_second =
            encoded.len() as f64 * 8.0 / (input.len() as f64 / f64::from(SAMPLE_RATE)) / 1000.0;
        assert!(
            (20.0..48.0).contains(&kbits_per_second),
            "{name}: {kbits_per_second} kbit/s"
        );
    }
}

#[test]
fn opus_tools_accept_our_files() {
    if !tools_available(&["opusinfo", "opusdec"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = chirp(1.5, SAMPLE_RATE);
    let path = dir.path().join("message.opus");
    std::fs::write(&path, encode_ogg_opus(&input).unwrap()).unwrap();

    let info = run(Command::new("opusinfo").arg(&path));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&info.stdout),
        String::from_utf8_lossy(&info.stderr)
    );
    println!("{text}");
    let lower = text.to_lowercase();
    assert!(
        !lower.contains("warning") && !lower.contains("error"),
        "opusinfo complains:\n{text}"
    );
    assert!(
        text.contains("Playback length: 0m:01.5"),
        "opusinfo length:\n{text}"
    );

    // opusdec applies pre-skip and end trimming itself: the length must come out exact.
    let wav = dir.path().join("decoded.wav");
    run(Command::new("opusdec").arg("--quiet").arg(&path).arg(&wav));
    let decoded = read_wav_file(&wav).unwrap();
    assert_eq!(decoded.len(), input.len());
    let similarity = correlation(&input, decoded.samples(), FRAME_SAMPLES);
    let ours = decode_ogg_opus(&std::fs::read(&path).unwrap()).unwrap();
    let agreement = correlation(ours.samples(), decoded.samples(), 0);
    println!(
        "opusdec of our file: correlation with the input {similarity:.4}, with our decoder {agreement:.5}"
    );
    assert!(similarity > 0.9, "correlation {similarity}");
    assert!(
        agreement > 0.999,
        "opusdec and our decoder differ: {agreement}"
    );
}

#[test]
fn files_from_opusenc_decode() {
    if !tools_available(&["opusenc"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Mono at 48 kHz, stereo at 44.1 kHz (opusenc resamples), and 5.1 (a multistream file).
    let cases: [(&str, u16, u32); 3] = [
        ("mono", 1, 48_000),
        ("stereo", 2, 44_100),
        ("surround", 6, 48_000),
    ];
    for (name, channels, rate) in cases {
        let mono = chirp(1.2, rate);
        let interleaved: Vec<f32> = mono
            .iter()
            .flat_map(|s| std::iter::repeat_n(*s, usize::from(channels)))
            .collect();
        let wav = dir.path().join(format!("{name}.wav"));
        let opus = dir.path().join(format!("{name}.opus"));
        write_wav(&wav, channels, rate, &interleaved);
        run(Command::new("opusenc").arg("--quiet").arg(&wav).arg(&opus));
        let decoded = decode_ogg_opus(&std::fs::read(&opus).unwrap()).unwrap();
        let original = read_wav_file(&wav).unwrap();
        let similarity = correlation(original.samples(), decoded.samples(), FRAME_SAMPLES);
        println!(
            "opusenc {name}: {} -> {} samples, correlation {similarity:.4}",
            original.len(),
            decoded.len()
        );
        assert!(similarity > 0.9, "{name}: correlation {similarity}");
        assert!(
            decoded.len().abs_diff(original.len()) <= FRAME_SAMPLES,
            "{name}: {} vs {}",
            decoded.len(),
            original.len()
        );
    }
}

#[test]
fn garbage_is_refused_clearly() {
    assert!(matches!(decode_ogg_opus(b""), Err(AudioError::NotOgg(_))));
    assert!(matches!(
        decode_ogg_opus(b"RIFF....WAVEfmt "),
        Err(AudioError::NotOgg(_))
    ));
    let noise: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(matches!(
        decode_ogg_opus(&noise),
        Err(AudioError::NotOgg(_))
    ));
    let mut fake = b"OggS".to_vec();
    fake.extend_from_slice(&noise);
    let err = decode_ogg_opus(&fake).unwrap_err();
    println!("OggS followed by noise: {err}");
}

#[test]
fn truncated_files_are_refused() {
    let encoded = encode_ogg_opus(&chirp(1.0, SAMPLE_RATE)).unwrap();
    // Every cut inside the headers, then a spread of cuts through the audio.
    let cuts = (1..200).chain((200..encoded.len()).step_by(97));
    for cut in cuts {
        match decode_ogg_opus(&encoded[..cut]) {
            Err(AudioError::Truncated(_)) => {}
            Err(AudioError::NotOgg(_)) if cut < 27 => {}
            other => panic!("cut at {cut} of {}: {other:?}", encoded.len()),
        }
    }
    let err = decode_ogg_opus(&encoded[..encoded.len() / 2]).unwrap_err();
    println!("half a file: {err}");
    assert!(err.to_string().starts_with("truncated audio file"));
}

#[test]
fn corrupted_pages_are_refused() {
    let mut encoded = encode_ogg_opus(&chirp(1.0, SAMPLE_RATE)).unwrap();
    let middle = encoded.len() / 2;
    encoded[middle] ^= 0x55;
    let err = decode_ogg_opus(&encoded).unwrap_err();
    assert!(matches!(err, AudioError::InvalidOpus(_)), "{err}");
}

/// Writes an Ogg file with one logical stream of the given packets.
fn ogg_with_packets(packets: &[Vec<u8>], granules: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = ogg::PacketWriter::new(Cursor::new(&mut out));
    for (idx, (packet, granule)) in packets.iter().zip(granules).enumerate() {
        let end = if idx + 1 == packets.len() {
            ogg::PacketWriteEndInfo::EndStream
        } else {
            ogg::PacketWriteEndInfo::EndPage
        };
        writer
            .write_packet(packet.clone(), 7, end, *granule)
            .unwrap();
    }
    drop(writer);
    out
}

#[test]
fn vorbis_and_other_ogg_streams_are_not_opus() {
    let mut vorbis_head = b"\x01vorbis".to_vec();
    vorbis_head.extend_from_slice(&[0; 22]);
    let file = ogg_with_packets(
        &[vorbis_head, b"\x03vorbis".to_vec(), vec![0; 40]],
        &[0, 0, 1024],
    );
    let err = decode_ogg_opus(&file).unwrap_err();
    println!("hand-made Vorbis: {err}");
    assert!(
        matches!(&err, AudioError::NotOpus(reason) if reason.contains("Vorbis")),
        "{err}"
    );

    let file = ogg_with_packets(&[b"Speex   1.2".to_vec(), vec![1; 30]], &[0, 160]);
    assert!(matches!(
        decode_ogg_opus(&file),
        Err(AudioError::NotOpus(_))
    ));

    if tools_available(&["sox"]) {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("tone.wav");
        let ogg = dir.path().join("tone.ogg");
        write_wav(&wav, 1, 48_000, &chirp(0.5, 48_000));
        run(Command::new("sox").arg(&wav).arg(&ogg));
        let err = decode_ogg_opus(&std::fs::read(&ogg).unwrap()).unwrap_err();
        println!("sox-made Vorbis: {err}");
        assert!(
            matches!(&err, AudioError::NotOpus(reason) if reason.contains("Vorbis")),
            "{err}"
        );
    }
}

#[test]
fn garbage_opus_packets_in_valid_pages_never_panic() {
    let encoded = encode_ogg_opus(&chirp(0.5, SAMPLE_RATE)).unwrap();
    let mut reader = ogg::PacketReader::new(Cursor::new(&encoded[..]));
    let mut packets = Vec::new();
    let mut granules = Vec::new();
    while let Some(packet) = reader.read_packet().unwrap() {
        granules.push(packet.absgp_page());
        packets.push(packet.data);
    }
    let mut state = 12_345u32;
    let mut random = move || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (state >> 16) as usize
    };
    let mut failures = 0;
    for _ in 0..300 {
        let mut mutated = packets.clone();
        for _ in 0..1 + random() % 8 {
            let idx = random() % mutated.len();
            let packet = &mut mutated[idx];
            match random() % 3 {
                0 if !packet.is_empty() => {
                    let at = random() % packet.len();
                    packet[at] = random() as u8;
                }
                1 => packet.truncate(random() % (packet.len() + 1)),
                _ => packet.extend((0..random() % 300).map(|_| random() as u8)),
            }
        }
        if decode_ogg_opus(&ogg_with_packets(&mutated, &granules)).is_err() {
            failures += 1;
        }
    }
    println!("{failures} of 300 mutated files refused, the rest decoded");
}

#[test]
fn wav_from_sox_formats_read_the_same() {
    if !tools_available(&["sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.wav");
    let input = chirp(0.5, 48_000);
    write_wav(&source, 1, 48_000, &input);
    for (name, args) in [
        ("u8", &["-b", "8", "-e", "unsigned-integer"][..]),
        ("s24", &["-b", "24"][..]),
        ("s32", &["-b", "32"][..]),
        ("f32", &["-b", "32", "-e", "floating-point"][..]),
        ("stereo-22k", &["-c", "2", "-r", "22050"][..]),
    ] {
        let path = dir.path().join(format!("{name}.wav"));
        run(Command::new("sox").arg(&source).args(args).arg(&path));
        let pcm = read_wav(&std::fs::read(&path).unwrap()).unwrap();
        let similarity = correlation(&input, pcm.samples(), ms(5));
        assert!(
            pcm.len().abs_diff(input.len()) <= 4,
            "{name}: {} samples",
            pcm.len()
        );
        assert!(similarity > 0.99, "{name}: correlation {similarity}");
    }
}
