//! Voice messages as Ogg Opus files (RFC 7845).
//!
//! [`encode_ogg_opus`] writes mono Opus at about 32 kbit/s in 20 ms packets: an `OpusHead`
//! page (with the encoder's lookahead as pre-skip), an `OpusTags` page, then the audio
//! with a page about every second. Granule positions count 48 kHz samples including the
//! pre-skip, and the last page carries the end-of-stream flag and a granule position that
//! trims the zero padding of the final packet, so the decoded length equals the input.
//!
//! [`decode_ogg_opus`] reads any Opus stream in an Ogg file, including stereo and
//! multichannel files made by other tools (mixed down to mono), honouring pre-skip, end
//! trimming and output gain. Other streams multiplexed in the file are skipped. Anything
//! else (garbage, a cut-off file, Ogg Vorbis) is an [`AudioError`] saying which.

use std::io::Cursor;

use ogg::{OggReadError, PacketReader, PacketWriteEndInfo, PacketWriter};

use crate::error::AudioError;
use crate::pcm::{FRAME_SAMPLES, MAX_DURATION, MAX_SAMPLES, Pcm, SAMPLE_RATE};

/// Target bit rate of voice messages: clear speech at about 4 kB per second.
pub const VOICE_BITRATE: i32 = 32_000;

/// Serial number of the single logical stream in files written here. Chaining several
/// voice messages into one physical stream is not a use case, so a constant is enough.
const STREAM_SERIAL: u32 = 0x436f_6e66;
/// Audio packets per Ogg page: one second, so a player can seek and stream in small steps.
const PACKETS_PER_PAGE: usize = 50;
/// The largest Opus packet is 1275 bytes per frame; 4000 is libopus's recommended buffer.
const MAX_PACKET_BYTES: usize = 4000;
/// The longest Opus packet: 120 ms at 48 kHz, per channel.
const MAX_PACKET_SAMPLES: usize = 5760;

/// Encodes 48 kHz mono samples as an Ogg Opus voice message.
///
/// # Errors
///
/// [`AudioError::TooLong`] above [`MAX_DURATION`], [`AudioError::Codec`] if libopus fails.
pub fn encode_ogg_opus(samples: &[f32]) -> Result<Vec<u8>, AudioError> {
    if samples.len() > MAX_SAMPLES {
        return Err(AudioError::TooLong { max: MAX_DURATION });
    }
    let mut encoder =
        opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
    encoder.set_bitrate(opus::Bitrate::Bits(VOICE_BITRATE))?;
    let lookahead = encoder.get_lookahead()?;
    let pre_skip = u16::try_from(lookahead)
        .map_err(|_| AudioError::Codec(format!("unexpected encoder lookahead {lookahead}")))?;

    let mut output = Vec::with_capacity(samples.len() / 10 + 256);
    let mut writer = PacketWriter::new(Cursor::new(&mut output));
    writer.write_packet(
        opus_head(pre_skip),
        STREAM_SERIAL,
        PacketWriteEndInfo::EndPage,
        0,
    )?;
    writer.write_packet(opus_tags(), STREAM_SERIAL, PacketWriteEndInfo::EndPage, 0)?;

    // The decoder's output lags the input by the lookahead, so the encoder is fed that many
    // extra samples (zeros) to bring the end of the input out; the final granule position
    // then marks where the real samples end.
    let end_granule = u64::from(pre_skip) + samples.len() as u64;
    let n_frames = (samples.len() + usize::from(pre_skip))
        .div_ceil(FRAME_SAMPLES)
        .max(1);
    let mut frame = [0.0f32; FRAME_SAMPLES];
    let mut packet = vec![0u8; MAX_PACKET_BYTES];
    for frame_idx in 0..n_frames {
        let start = frame_idx * FRAME_SAMPLES;
        frame.fill(0.0);
        if let Some(chunk) = samples.get(start..) {
            let chunk = &chunk[..chunk.len().min(FRAME_SAMPLES)];
            for (slot, sample) in frame.iter_mut().zip(chunk) {
                *slot = crate::pcm::sanitize(*sample);
            }
        }
        let len = encoder.encode_float(&frame, &mut packet)?;
        let is_last = frame_idx + 1 == n_frames;
        let (end_info, granule) = if is_last {
            (PacketWriteEndInfo::EndStream, end_granule)
        } else if (frame_idx + 1) % PACKETS_PER_PAGE == 0 {
            (
                PacketWriteEndInfo::EndPage,
                ((frame_idx + 1) * FRAME_SAMPLES) as u64,
            )
        } else {
            (
                PacketWriteEndInfo::NormalPacket,
                ((frame_idx + 1) * FRAME_SAMPLES) as u64,
            )
        };
        writer.write_packet(packet[..len].to_vec(), STREAM_SERIAL, end_info, granule)?;
    }
    drop(writer);
    Ok(output)
}

/// Decodes an Ogg Opus file to 48 kHz mono.
///
/// # Errors
///
/// - [`AudioError::NotOgg`] if the bytes are not an Ogg stream,
/// - [`AudioError::NotOpus`] if the Ogg file holds no Opus stream (for example Vorbis),
/// - [`AudioError::Truncated`] if the file ends before the end of its Opus stream,
/// - [`AudioError::InvalidOpus`] for malformed headers, packets or pages,
/// - [`AudioError::TooLong`] if the audio lasts more than [`MAX_DURATION`].
pub fn decode_ogg_opus(bytes: &[u8]) -> Result<Pcm, AudioError> {
    decode_with_limit(bytes, MAX_SAMPLES)
}

/// [`decode_ogg_opus`] with the length limit as a parameter, so tests can reach it cheaply.
fn decode_with_limit(bytes: &[u8], max_samples: usize) -> Result<Pcm, AudioError> {
    if !bytes.starts_with(b"OggS") {
        return Err(AudioError::NotOgg(
            "the data does not start with an Ogg page".into(),
        ));
    }
    let mut reader = PacketReader::new(Cursor::new(bytes));
    let mut other_streams: Vec<&'static str> = Vec::new();
    let mut stream: Option<OpusStream> = None;
    let mut end_granule = None;
    loop {
        let packet = match reader.read_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(err) => return Err(ogg_error(err)),
        };
        let Some(opus_stream) = stream.as_mut() else {
            if !packet.first_in_stream() {
                // Every stream starts with a beginning-of-stream page, and all of those come
                // before any other page (RFC 3533): no Opus stream is coming.
                break;
            }
            if packet.data.starts_with(b"OpusHead") {
                let head = OpusHead::parse(&packet.data)?;
                stream = Some(OpusStream::new(packet.stream_serial(), head, max_samples)?);
            } else {
                other_streams.push(codec_name(&packet.data));
            }
            continue;
        };
        if packet.stream_serial() != opus_stream.serial {
            continue;
        }
        opus_stream.push(&packet.data)?;
        if packet.last_in_stream() {
            end_granule = Some(packet.absgp_page());
            break;
        }
    }
    match stream {
        Some(opus_stream) => match end_granule {
            Some(granule) => opus_stream.finish(granule),
            None => Err(AudioError::Truncated(
                "the Opus stream ends before its last page".into(),
            )),
        },
        None if other_streams.is_empty() => Err(AudioError::Truncated(
            "the file ends before the first Ogg page is complete".into(),
        )),
        None => Err(AudioError::NotOpus(format!(
            "the Ogg file holds {}, only Opus is supported",
            other_streams.join(" and ")
        ))),
    }
}

fn opus_head(pre_skip: u16) -> Vec<u8> {
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(b"OpusHead");
    head.push(1); // version
    head.push(1); // channels
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&SAMPLE_RATE.to_le_bytes()); // rate of the original input
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // channel mapping family 0: mono or stereo, no mapping table
    head
}

fn opus_tags() -> Vec<u8> {
    let vendor = format!(
        "confide-audio {} ({})",
        env!("CARGO_PKG_VERSION"),
        opus::version()
    );
    let mut tags = Vec::with_capacity(16 + vendor.len());
    tags.extend_from_slice(b"OpusTags");
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor.as_bytes());
    tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
    tags
}

/// What the first packet of a non-Opus stream says it is, for the error message.
fn codec_name(first_packet: &[u8]) -> &'static str {
    const KNOWN: [(&[u8], &str); 6] = [
        (b"\x01vorbis", "Ogg Vorbis"),
        (b"Speex   ", "Speex"),
        (b"\x7fFLAC", "FLAC"),
        (b"\x80theora", "Theora video"),
        (b"fishead\0", "an Ogg Skeleton"),
        (b"OpusTags", "a headerless Opus stream"),
    ];
    KNOWN
        .iter()
        .find(|(magic, _)| first_packet.starts_with(magic))
        .map_or("an unknown codec", |(_, name)| *name)
}

fn ogg_error(err: OggReadError) -> AudioError {
    match err {
        OggReadError::ReadError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::Truncated("the file ends in the middle of an Ogg page".into())
        }
        OggReadError::HashMismatch(..) => {
            AudioError::InvalidOpus("an Ogg page is corrupt (checksum mismatch)".into())
        }
        OggReadError::NoCapturePatternFound | OggReadError::InvalidStreamStructVer(_) => {
            AudioError::NotOgg(err.to_string())
        }
        other => AudioError::InvalidOpus(other.to_string()),
    }
}

/// The identification header (RFC 7845 section 5.1).
#[derive(Debug)]
struct OpusHead {
    channels: u8,
    pre_skip: u16,
    output_gain_q8: i16,
    mapping: ChannelMapping,
}

#[derive(Debug)]
enum ChannelMapping {
    /// Family 0: one Opus stream, mono or stereo.
    Single,
    /// Families 1 and 255: several streams and a channel table.
    Multi {
        streams: u8,
        coupled: u8,
        table: Vec<u8>,
    },
}

impl OpusHead {
    fn parse(data: &[u8]) -> Result<Self, AudioError> {
        let invalid = |what: &str| AudioError::InvalidOpus(format!("bad OpusHead: {what}"));
        if data.len() < 19 {
            return Err(invalid("too short"));
        }
        let version = data[8];
        if version >> 4 != 0 {
            return Err(invalid(&format!("unsupported version {version}")));
        }
        let channels = data[9];
        if channels == 0 {
            return Err(invalid("zero channels"));
        }
        let pre_skip = u16::from_le_bytes([data[10], data[11]]);
        let output_gain_q8 = i16::from_le_bytes([data[16], data[17]]);
        let mapping = match data[18] {
            0 if channels <= 2 => ChannelMapping::Single,
            0 => return Err(invalid("mapping family 0 with more than two channels")),
            family => {
                let table_end = 21 + usize::from(channels);
                let Some(table) = data.get(21..table_end) else {
                    return Err(invalid("channel mapping table is cut short"));
                };
                let (streams, coupled) = (data[19], data[20]);
                let total = u16::from(streams) + u16::from(coupled);
                if streams == 0 || coupled > streams || total > 255 {
                    return Err(invalid(&format!("{streams} streams, {coupled} coupled")));
                }
                if family == 1 && channels > 8 {
                    return Err(invalid("mapping family 1 with more than eight channels"));
                }
                if table
                    .iter()
                    .any(|&idx| idx != 255 && u16::from(idx) >= total)
                {
                    return Err(invalid("channel mapping table out of range"));
                }
                ChannelMapping::Multi {
                    streams,
                    coupled,
                    table: table.to_vec(),
                }
            }
        };
        Ok(OpusHead {
            channels,
            pre_skip,
            output_gain_q8,
            mapping,
        })
    }
}

/// Either decoder libopus offers, both producing 48 kHz output.
enum StreamDecoder {
    /// Mono and stereo streams: libopus downmixes stereo itself when asked for one channel.
    Single(opus::Decoder),
    /// Multichannel streams, decoded to every channel then averaged here.
    Multi {
        decoder: opus::MSDecoder,
        channels: usize,
    },
}

/// Decoding state of the Opus stream found in the file.
struct OpusStream {
    serial: u32,
    head: OpusHead,
    seen_tags: bool,
    decoder: StreamDecoder,
    /// Decoded mono samples, pre-skip included.
    decoded: Vec<f32>,
    scratch: Vec<f32>,
    /// Samples per channel of the previous packet, for concealing an empty (lost) packet.
    last_packet_samples: usize,
    /// The most samples the decoded audio may have.
    max_samples: usize,
}

impl OpusStream {
    fn new(serial: u32, head: OpusHead, max_samples: usize) -> Result<Self, AudioError> {
        let (decoder, channels) = match &head.mapping {
            ChannelMapping::Single => (
                StreamDecoder::Single(opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?),
                1,
            ),
            ChannelMapping::Multi {
                streams,
                coupled,
                table,
            } => {
                let decoder = opus::MSDecoder::new(SAMPLE_RATE, *streams, *coupled, table)
                    .map_err(|err| AudioError::InvalidOpus(format!("bad channel layout: {err}")))?;
                let channels = usize::from(head.channels);
                (StreamDecoder::Multi { decoder, channels }, channels)
            }
        };
        Ok(OpusStream {
            serial,
            head,
            seen_tags: false,
            decoder,
            decoded: Vec::new(),
            scratch: vec![0.0; MAX_PACKET_SAMPLES * channels],
            last_packet_samples: FRAME_SAMPLES,
            max_samples,
        })
    }

    /// Takes the next packet of the stream: the comment header, then audio.
    fn push(&mut self, data: &[u8]) -> Result<(), AudioError> {
        if !self.seen_tags {
            if !data.starts_with(b"OpusTags") {
                return Err(AudioError::InvalidOpus(
                    "the OpusTags header is missing".into(),
                ));
            }
            self.seen_tags = true;
            return Ok(());
        }
        // Decoding stops soon after the limit; the exact check is made once trimmed.
        if self.decoded.len()
            > self.max_samples + usize::from(self.head.pre_skip) + MAX_PACKET_SAMPLES
        {
            return Err(AudioError::TooLong { max: MAX_DURATION });
        }
        let bad_packet =
            |err: opus::Error| AudioError::InvalidOpus(format!("bad audio packet: {err}"));
        // An empty packet stands for a lost one (RFC 7845 section 4.4): conceal it.
        let wanted = if data.is_empty() {
            self.last_packet_samples
        } else {
            MAX_PACKET_SAMPLES
        };
        match &mut self.decoder {
            StreamDecoder::Single(decoder) => {
                let n = decoder
                    .decode_float(data, &mut self.scratch[..wanted], false)
                    .map_err(bad_packet)?;
                self.decoded
                    .extend_from_slice(&self.scratch[..n.min(wanted)]);
                self.last_packet_samples = n.clamp(1, MAX_PACKET_SAMPLES);
            }
            StreamDecoder::Multi { decoder, channels } => {
                let channels = *channels;
                let n = decoder
                    .decode_float(data, &mut self.scratch[..wanted * channels], false)
                    .map_err(bad_packet)?;
                let frames = self.scratch[..n.min(wanted) * channels].chunks_exact(channels);
                self.decoded
                    .extend(frames.map(|frame| frame.iter().sum::<f32>() / channels as f32));
                self.last_packet_samples = n.clamp(1, MAX_PACKET_SAMPLES);
            }
        }
        Ok(())
    }

    /// Applies pre-skip, end trimming and output gain once the last page is read.
    fn finish(self, end_granule: u64) -> Result<Pcm, AudioError> {
        if !self.seen_tags {
            return Err(AudioError::InvalidOpus(
                "the stream ends after its first header".into(),
            ));
        }
        let pre_skip = usize::from(self.head.pre_skip);
        let decoded_len = self.decoded.len();
        // A granule position counts samples from the start of the stream, pre-skip included.
        // If the last page ends before the decoded audio, the difference is padding. A final
        // position beyond the decoded audio means the stream did not start at zero (cut from
        // a longer one); nothing is trimmed then. All ones means "no position".
        let end = match usize::try_from(end_granule) {
            Ok(end) if end_granule != u64::MAX && end <= decoded_len => end,
            _ => decoded_len,
        };
        if end_granule != u64::MAX && end_granule < pre_skip as u64 {
            return Err(AudioError::InvalidOpus(
                "the stream ends before its pre-skip is over".into(),
            ));
        }
        if end <= pre_skip {
            return Ok(Pcm::default());
        }
        let mut samples = self.decoded;
        samples.truncate(end);
        samples.drain(..pre_skip);
        if samples.len() > self.max_samples {
            return Err(AudioError::TooLong { max: MAX_DURATION });
        }
        if self.head.output_gain_q8 != 0 {
            let gain = 10f32.powf(f32::from(self.head.output_gain_q8) / (20.0 * 256.0));
            for sample in &mut samples {
                *sample *= gain;
            }
        }
        Ok(Pcm::new(samples))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chirp(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let t = i as f64 / f64::from(SAMPLE_RATE);
                (0.5 * (2.0 * std::f64::consts::PI * (200.0 * t + 400.0 * t * t)).sin()) as f32
            })
            .collect()
    }

    #[test]
    fn decoded_length_equals_input_length() {
        for len in [0, 1, 959, 960, 961, 48_000, 100_000] {
            let encoded = encode_ogg_opus(&chirp(len)).unwrap();
            let decoded = decode_ogg_opus(&encoded).unwrap();
            assert_eq!(decoded.len(), len, "input of {len} samples");
        }
    }

    #[test]
    fn round_trip_resembles_the_input() {
        let input = chirp(48_000);
        let decoded = decode_ogg_opus(&encode_ogg_opus(&input).unwrap()).unwrap();
        let similarity = crate::correlation(&input, decoded.samples(), 480);
        assert!(similarity > 0.9, "correlation {similarity}");
    }

    #[test]
    fn head_is_rfc_7845() {
        let encoded = encode_ogg_opus(&chirp(4800)).unwrap();
        let mut reader = PacketReader::new(Cursor::new(&encoded[..]));
        let head = reader.read_packet().unwrap().unwrap();
        assert!(head.first_in_stream() && head.last_in_page());
        assert_eq!(head.data.len(), 19);
        assert_eq!(&head.data[..10], b"OpusHead\x01\x01");
        let pre_skip = u16::from_le_bytes([head.data[10], head.data[11]]);
        assert!(pre_skip > 0 && pre_skip < 960, "pre-skip {pre_skip}");
        let tags = reader.read_packet().unwrap().unwrap();
        assert!(tags.data.starts_with(b"OpusTags") && tags.last_in_page());
        let mut last = None;
        while let Some(packet) = reader.read_packet().unwrap() {
            last = Some((packet.absgp_page(), packet.last_in_stream()));
        }
        assert_eq!(last, Some((u64::from(pre_skip) + 4800, true)));
    }

    #[test]
    fn refuses_audio_over_the_limit() {
        let encoded = encode_ogg_opus(&chirp(48_000)).unwrap();
        assert_eq!(decode_with_limit(&encoded, 48_000).unwrap().len(), 48_000);
        let err = decode_with_limit(&encoded, 47_999).unwrap_err();
        assert!(matches!(err, AudioError::TooLong { .. }), "{err}");
        assert!(matches!(
            decode_with_limit(&encoded, 4_800),
            Err(AudioError::TooLong { .. })
        ));
        assert!(matches!(
            encode_ogg_opus(&vec![0.0; MAX_SAMPLES + 1]),
            Err(AudioError::TooLong { .. })
        ));
    }

    #[test]
    fn refuses_headers_that_lie() {
        assert!(OpusHead::parse(b"OpusHead").is_err());
        let mut head = opus_head(312);
        head[9] = 0;
        assert!(OpusHead::parse(&head).is_err());
        let mut head = opus_head(312);
        head[9] = 3; // three channels need a mapping table
        assert!(OpusHead::parse(&head).is_err());
        let mut head = opus_head(312);
        head[18] = 1; // family 1 without its table
        assert!(OpusHead::parse(&head).is_err());
    }
}
