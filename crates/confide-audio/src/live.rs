//! Live voice: 20 ms frames to Opus packets and back.
//!
//! The caller moves packets over the network however it likes; this module only turns
//! [`FRAME_SAMPLES`]-sample frames into packets ([`LiveEncoder`]) and packets into frames
//! ([`LiveDecoder`]). Live packets carry in-band forward error correction, so when one is
//! lost the decoder can rebuild a rough version of it from the packet after
//! ([`LiveDecoder::recover`]), or otherwise invent a plausible continuation
//! ([`LiveDecoder::conceal`]) instead of a click of silence.

use crate::error::AudioError;
use crate::pcm::{FRAME_SAMPLES, SAMPLE_RATE, sanitize};

/// Bit rate of live voice, the same as voice messages.
const LIVE_BITRATE: i32 = 32_000;
/// Packet loss the encoder plans for, in percent: it spends bits on redundancy accordingly.
const EXPECTED_LOSS_PERCENT: i32 = 10;
/// libopus's recommended output buffer for one packet.
const MAX_PACKET_BYTES: usize = 4000;
/// The longest packet a peer may send: 120 ms at 48 kHz.
const MAX_PACKET_SAMPLES: usize = 5760;

/// Encodes 20 ms mono frames at 48 kHz into Opus packets.
pub struct LiveEncoder {
    encoder: opus::Encoder,
    packet: Vec<u8>,
}

impl std::fmt::Debug for LiveEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveEncoder").finish_non_exhaustive()
    }
}

impl LiveEncoder {
    /// A voice encoder with in-band forward error correction.
    ///
    /// # Errors
    ///
    /// [`AudioError::Codec`] if libopus cannot be set up.
    pub fn new() -> Result<Self, AudioError> {
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(LIVE_BITRATE))?;
        encoder.set_inband_fec(true)?;
        encoder.set_packet_loss_perc(EXPECTED_LOSS_PERCENT)?;
        Ok(LiveEncoder {
            encoder,
            packet: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// Encodes one frame of exactly [`FRAME_SAMPLES`] samples into one packet.
    ///
    /// # Errors
    ///
    /// [`AudioError::FrameSize`] for a frame of another length, [`AudioError::Codec`] if
    /// libopus fails.
    pub fn encode(&mut self, frame: &[f32]) -> Result<Vec<u8>, AudioError> {
        if frame.len() != FRAME_SAMPLES {
            return Err(AudioError::FrameSize {
                expected: FRAME_SAMPLES,
                actual: frame.len(),
            });
        }
        let mut clean = [0.0f32; FRAME_SAMPLES];
        for (slot, sample) in clean.iter_mut().zip(frame) {
            *slot = sanitize(*sample);
        }
        let len = self.encoder.encode_float(&clean, &mut self.packet)?;
        Ok(self.packet[..len].to_vec())
    }
}

/// Decodes Opus packets from a peer into 48 kHz mono samples.
pub struct LiveDecoder {
    decoder: opus::Decoder,
    output: Vec<f32>,
    /// Samples in the last decoded packet: a lost packet is assumed to be as long.
    last_packet_samples: usize,
}

impl std::fmt::Debug for LiveDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveDecoder").finish_non_exhaustive()
    }
}

impl LiveDecoder {
    /// A decoder for one incoming stream.
    ///
    /// # Errors
    ///
    /// [`AudioError::Codec`] if libopus cannot be set up.
    pub fn new() -> Result<Self, AudioError> {
        Ok(LiveDecoder {
            decoder: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?,
            output: vec![0.0; MAX_PACKET_SAMPLES],
            last_packet_samples: FRAME_SAMPLES,
        })
    }

    /// Decodes the next packet: usually [`FRAME_SAMPLES`] samples (a peer may send other
    /// Opus frame sizes, up to 120 ms). Stereo packets are mixed down to mono.
    ///
    /// # Errors
    ///
    /// [`AudioError::InvalidOpus`] if the packet is not valid Opus; the caller can then
    /// treat it as lost and call [`conceal`](Self::conceal).
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<f32>, AudioError> {
        if packet.is_empty() {
            return self.conceal();
        }
        let n = self
            .decoder
            .decode_float(packet, &mut self.output, false)
            .map_err(|err| AudioError::InvalidOpus(format!("bad live packet: {err}")))?;
        self.last_packet_samples = n.clamp(1, MAX_PACKET_SAMPLES);
        Ok(self.output[..n.min(MAX_PACKET_SAMPLES)].to_vec())
    }

    /// Fills in for a packet that never arrived (packet-loss concealment), with as many
    /// samples as the previous packet had.
    ///
    /// # Errors
    ///
    /// [`AudioError::Codec`] if libopus fails.
    pub fn conceal(&mut self) -> Result<Vec<f32>, AudioError> {
        let wanted = self.last_packet_samples;
        let n = self
            .decoder
            .decode_float(&[], &mut self.output[..wanted], false)?;
        Ok(self.output[..n.min(wanted)].to_vec())
    }

    /// Rebuilds a lost packet from the forward-error-correction data carried by the packet
    /// that followed it. Call it with that next packet before decoding the next packet
    /// itself with [`decode`](Self::decode). Without such data, libopus conceals instead.
    ///
    /// # Errors
    ///
    /// [`AudioError::InvalidOpus`] if `next_packet` is not valid Opus.
    pub fn recover(&mut self, next_packet: &[u8]) -> Result<Vec<f32>, AudioError> {
        if next_packet.is_empty() {
            return self.conceal();
        }
        let wanted = self.last_packet_samples;
        let n = self
            .decoder
            .decode_float(next_packet, &mut self.output[..wanted], true)
            .map_err(|err| AudioError::InvalidOpus(format!("bad live packet: {err}")))?;
        Ok(self.output[..n.min(wanted)].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speechlike(len: usize) -> Vec<f32> {
        // A 150 Hz buzz with harmonics, slowly amplitude-modulated, like a sustained vowel.
        (0..len)
            .map(|i| {
                let t = i as f32 / SAMPLE_RATE as f32;
                let envelope = 0.5 + 0.4 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
                let buzz: f32 = (1..6)
                    .map(|h| (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32)
                    .sum();
                0.3 * envelope * buzz
            })
            .collect()
    }

    #[test]
    fn frames_round_trip() {
        let input = speechlike(FRAME_SAMPLES * 50);
        let mut encoder = LiveEncoder::new().unwrap();
        let mut decoder = LiveDecoder::new().unwrap();
        let mut output = Vec::new();
        for frame in input.chunks(FRAME_SAMPLES) {
            let packet = encoder.encode(frame).unwrap();
            assert!(packet.len() < 200, "packet of {} bytes", packet.len());
            let decoded = decoder.decode(&packet).unwrap();
            assert_eq!(decoded.len(), FRAME_SAMPLES);
            output.extend(decoded);
        }
        let similarity = crate::correlation(&input, &output, 960);
        assert!(similarity > 0.9, "correlation {similarity}");
    }

    #[test]
    fn lost_packets_are_concealed_or_recovered() {
        let input = speechlike(FRAME_SAMPLES * 50);
        let mut encoder = LiveEncoder::new().unwrap();
        let packets: Vec<Vec<u8>> = input
            .chunks(FRAME_SAMPLES)
            .map(|f| encoder.encode(f).unwrap())
            .collect();
        let mut decoder = LiveDecoder::new().unwrap();
        let mut output = Vec::new();
        for (idx, packet) in packets.iter().enumerate() {
            let frame = match idx % 10 {
                3 => decoder.conceal().unwrap(),
                7 => decoder.recover(&packets[idx + 1]).unwrap(),
                _ => decoder.decode(packet).unwrap(),
            };
            assert_eq!(frame.len(), FRAME_SAMPLES, "frame {idx}");
            output.extend(frame);
        }
        let similarity = crate::correlation(&input, &output, 960);
        assert!(similarity > 0.7, "correlation with 20% loss {similarity}");
    }

    #[test]
    fn refuses_wrong_frames_and_bad_packets() {
        let mut encoder = LiveEncoder::new().unwrap();
        assert!(matches!(
            encoder.encode(&[0.0; 100]),
            Err(AudioError::FrameSize {
                expected: FRAME_SAMPLES,
                actual: 100
            })
        ));
        let mut decoder = LiveDecoder::new().unwrap();
        // A code-3 packet header announcing 63 frames with no data is invalid.
        assert!(decoder.decode(&[0xff, 0xff]).is_err());
        assert_eq!(decoder.decode(&[]).unwrap().len(), FRAME_SAMPLES);
    }
}
