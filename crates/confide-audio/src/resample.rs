//! Sample-rate conversion by windowed-sinc interpolation.
//!
//! Each output sample is a weighted sum of the input samples around its position, weighted
//! by a low-pass sinc kernel shaped by a Kaiser window. The cut-off sits a little below the
//! lower of the two Nyquist frequencies, so upsampling (22.05 kHz speech to 48 kHz) adds no
//! images and downsampling (96 kHz to 48 kHz) folds nothing back into the audible band.
//!
//! The kernel is tabulated once per resampler and read with linear interpolation, which
//! keeps the cost to a few dozen multiply-adds per output sample for any pair of rates,
//! including awkward ones such as 44.1 kHz to 48 kHz.
//!
//! [`Resampler`] works on a stream (the microphone delivers blocks of arbitrary size);
//! [`resample`] is the one-shot form for whole files. Both produce the same samples, and
//! sample `n` of the output is aligned with time `n / out_rate` of the input: there is no
//! delay to compensate.

/// Kernel half-width, in zero crossings of the sinc.
const ZERO_CROSSINGS: usize = 32;
/// Table entries per zero crossing (the kernel is linearly interpolated between them).
const TABLE_RESOLUTION: usize = 512;
/// Cut-off as a fraction of the lower Nyquist frequency, leaving room for the transition band.
const ROLL_OFF: f64 = 0.9;
/// Kaiser window shape: about 80 dB of stop-band attenuation.
const KAISER_BETA: f64 = 8.0;

/// Converts a mono stream from one sample rate to another, block by block.
#[derive(Debug, Clone)]
pub struct Resampler {
    /// Input rate divided by the greatest common divisor of both rates.
    in_step: u64,
    /// Output rate divided by the same divisor.
    out_step: u64,
    /// Cut-off as a fraction of the input Nyquist frequency (at most 1).
    cutoff: f64,
    /// Input samples used on each side of an output position.
    radius: i64,
    /// The tabulated window-shaped sinc, indexed by distance in zero crossings.
    table: Vec<f32>,
    /// Input samples still needed, starting at absolute index `history_start`.
    history: Vec<f32>,
    history_start: u64,
    /// Input samples received so far.
    total_in: u64,
    /// Absolute index of the next output sample.
    next_out: u64,
}

impl Resampler {
    /// A resampler from `in_rate` to `out_rate` (both in Hz; zero is treated as 1).
    pub fn new(in_rate: u32, out_rate: u32) -> Self {
        let in_rate = u64::from(in_rate.max(1));
        let out_rate = u64::from(out_rate.max(1));
        let divisor = gcd(in_rate, out_rate);
        let cutoff = if out_rate < in_rate {
            ROLL_OFF * out_rate as f64 / in_rate as f64
        } else {
            ROLL_OFF
        };
        let radius = (ZERO_CROSSINGS as f64 / cutoff).ceil() as i64 + 1;
        Resampler {
            in_step: in_rate / divisor,
            out_step: out_rate / divisor,
            cutoff,
            radius,
            table: kernel_table(),
            history: Vec::new(),
            history_start: 0,
            total_in: 0,
            next_out: 0,
        }
    }

    /// Feeds `input` and appends every output sample that is now complete to `output`.
    pub fn process(&mut self, input: &[f32], output: &mut Vec<f32>) {
        if self.is_identity() {
            output.extend_from_slice(input);
            self.total_in += input.len() as u64;
            self.next_out = self.total_in;
            return;
        }
        self.history.extend_from_slice(input);
        self.total_in += input.len() as u64;
        loop {
            let (center, _) = self.position(self.next_out);
            // Every input sample the kernel touches must have arrived.
            if center + self.radius >= self.total_in as i64 {
                break;
            }
            output.push(self.output_sample(self.next_out));
            self.next_out += 1;
        }
        self.forget_old_input();
    }

    /// Ends the stream: appends the remaining output samples, treating the input after its
    /// end as silence. The total output is `ceil(input_len * out_rate / in_rate)` samples.
    pub fn finish(&mut self, output: &mut Vec<f32>) {
        let total_out = (self.total_in * self.out_step).div_ceil(self.in_step);
        if self.is_identity() {
            return;
        }
        while self.next_out < total_out {
            output.push(self.output_sample(self.next_out));
            self.next_out += 1;
        }
        self.history.clear();
        self.history_start = self.total_in;
    }

    fn is_identity(&self) -> bool {
        self.in_step == self.out_step
    }

    /// The input position of output sample `n`: its integer part and fraction.
    fn position(&self, n: u64) -> (i64, f64) {
        let scaled = n * self.in_step;
        let center = (scaled / self.out_step) as i64;
        let fraction = (scaled % self.out_step) as f64 / self.out_step as f64;
        (center, fraction)
    }

    fn output_sample(&self, n: u64) -> f32 {
        let (center, fraction) = self.position(n);
        let first = (center - self.radius + 1).max(self.history_start as i64);
        let last = (center + self.radius).min(self.total_in as i64 - 1);
        let mut sum = 0.0f64;
        let mut index = first;
        while index <= last {
            let distance = (index - center) as f64 - fraction;
            let weight = self.kernel(distance * self.cutoff);
            let offset = (index as u64 - self.history_start) as usize;
            if let Some(sample) = self.history.get(offset) {
                sum += f64::from(*sample) * weight;
            }
            index += 1;
        }
        (sum * self.cutoff) as f32
    }

    /// The window-shaped sinc at `x` zero crossings from its centre.
    fn kernel(&self, x: f64) -> f64 {
        let scaled = x.abs() * TABLE_RESOLUTION as f64;
        let index = scaled as usize;
        let fraction = scaled - index as f64;
        match (self.table.get(index), self.table.get(index + 1)) {
            (Some(a), Some(b)) => f64::from(*a) + (f64::from(*b) - f64::from(*a)) * fraction,
            _ => 0.0,
        }
    }

    /// Drops input samples that no future output sample will touch.
    fn forget_old_input(&mut self) {
        let (center, _) = self.position(self.next_out);
        let keep_from = (center - self.radius + 1).max(0) as u64;
        if keep_from > self.history_start {
            let drop = ((keep_from - self.history_start) as usize).min(self.history.len());
            self.history.drain(..drop);
            self.history_start += drop as u64;
        }
    }
}

/// Resamples a whole mono signal from `in_rate` to `out_rate` Hz.
pub fn resample(input: &[f32], in_rate: u32, out_rate: u32) -> Vec<f32> {
    if in_rate == out_rate {
        return input.to_vec();
    }
    let mut resampler = Resampler::new(in_rate, out_rate);
    let expected = (input.len() as u64 * u64::from(out_rate)).div_ceil(u64::from(in_rate.max(1)));
    let mut output = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    resampler.process(input, &mut output);
    resampler.finish(&mut output);
    output
}

fn kernel_table() -> Vec<f32> {
    let len = ZERO_CROSSINGS * TABLE_RESOLUTION + 2;
    let window_norm = bessel_i0(KAISER_BETA);
    (0..len)
        .map(|i| {
            let x = i as f64 / TABLE_RESOLUTION as f64;
            if x >= ZERO_CROSSINGS as f64 {
                return 0.0;
            }
            let ratio = x / ZERO_CROSSINGS as f64;
            let window = bessel_i0(KAISER_BETA * (1.0 - ratio * ratio).sqrt()) / window_norm;
            (sinc(x) * window) as f32
        })
        .collect()
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let angle = std::f64::consts::PI * x;
        angle.sin() / angle
    }
}

/// The modified Bessel function of the first kind, order zero (power series).
fn bessel_i0(x: f64) -> f64 {
    let half = x / 2.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..64 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as f32
            })
            .collect()
    }

    /// Largest error against the ideal tone, skipping the edges where input ends.
    fn max_error(output: &[f32], freq: f64, rate: u32, skip: usize) -> f32 {
        let ideal = tone(freq, rate, output.len());
        output[skip..output.len() - skip]
            .iter()
            .zip(&ideal[skip..])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn upsamples_a_tone_accurately() {
        let input = tone(440.0, 22_050, 22_050);
        let output = resample(&input, 22_050, 48_000);
        assert_eq!(output.len(), 48_000);
        assert!(max_error(&output, 440.0, 48_000, 200) < 2e-3);
    }

    #[test]
    fn downsamples_a_tone_accurately() {
        let input = tone(1000.0, 44_100, 44_100);
        let output = resample(&input, 44_100, 48_000);
        assert!(max_error(&output, 1000.0, 48_000, 200) < 2e-3);
        let output = resample(&tone(1000.0, 96_000, 96_000), 96_000, 48_000);
        assert_eq!(output.len(), 48_000);
        assert!(max_error(&output, 1000.0, 48_000, 200) < 2e-3);
    }

    #[test]
    fn downsampling_removes_content_above_the_new_nyquist() {
        // 30 kHz is inaudible at 96 kHz and must not alias to 18 kHz at 48 kHz.
        let output = resample(&tone(30_000.0, 96_000, 96_000), 96_000, 48_000);
        let peak = output[200..output.len() - 200]
            .iter()
            .fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak < 1e-3, "aliased peak {peak}");
    }

    #[test]
    fn streaming_in_blocks_matches_one_shot() {
        let input = tone(300.0, 8_000, 8_000);
        let whole = resample(&input, 8_000, 48_000);
        let mut resampler = Resampler::new(8_000, 48_000);
        let mut streamed = Vec::new();
        for block in input.chunks(97) {
            resampler.process(block, &mut streamed);
        }
        resampler.finish(&mut streamed);
        assert_eq!(whole, streamed);
    }

    #[test]
    fn identity_and_empty() {
        assert_eq!(resample(&[0.25, -0.5], 48_000, 48_000), vec![0.25, -0.5]);
        assert!(resample(&[], 44_100, 48_000).is_empty());
    }
}
