//! Comparing signals: normalised cross-correlation.
//!
//! Lossy codecs change every sample a little and shift the signal by a few samples, so
//! tests cannot compare audio sample by sample. [`correlation`] measures how much two
//! signals look alike once the best alignment within a window of lags is found: 1.0 for
//! identical shapes (whatever their loudness), about 0 for unrelated signals.

/// How two signals line up best: their similarity and the lag that gives it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Alignment {
    /// The normalised cross-correlation at `lag`, at most 1.0 (0.0 if nothing matched).
    pub correlation: f32,
    /// How many samples later the pattern appears in the second signal than in the first
    /// (negative: earlier).
    pub lag: i64,
}

/// The best normalised cross-correlation of `a` and `b` over lags in `-max_lag..=max_lag`.
///
/// At lag `k` sample `a[i]` is paired with `b[i + k]` over the part where both exist, and
/// the score is `Σ a·b / √(Σ a² · Σ b²)` over that overlap. Lags whose overlap is shorter
/// than half of the shorter signal are ignored, so a few edge samples cannot score
/// perfectly by chance. Returns 0.0 if either signal is empty or silent. The computation
/// uses an FFT, so long signals and wide lag windows stay cheap.
pub fn correlation(a: &[f32], b: &[f32], max_lag: usize) -> f32 {
    best_alignment(a, b, max_lag).correlation
}

/// Like [`correlation`], also telling at which lag the best match was found.
pub fn best_alignment(a: &[f32], b: &[f32], max_lag: usize) -> Alignment {
    let shorter = a.len().min(b.len());
    if shorter == 0 {
        return Alignment::default();
    }
    let min_overlap = shorter.div_ceil(2);
    let products = cross_products(a, b);
    let a_energy = prefix_energy(a);
    let b_energy = prefix_energy(b);
    let max_lag = max_lag.min(a.len().max(b.len())) as i64;
    let (a_len, b_len) = (a.len() as i64, b.len() as i64);
    let mut best = Alignment::default();
    let mut best_score = 0.0f64;
    for lag in -max_lag..=max_lag {
        // Pairs (i, i + lag) with 0 <= i < a_len and 0 <= i + lag < b_len.
        let start = (-lag).max(0);
        let end = a_len.min(b_len - lag);
        if end - start < min_overlap as i64 {
            continue;
        }
        let (start, end) = (start as usize, end as usize);
        let energy_a = a_energy[end] - a_energy[start];
        let energy_b =
            b_energy[(end as i64 + lag) as usize] - b_energy[(start as i64 + lag) as usize];
        if energy_a <= f64::EPSILON || energy_b <= f64::EPSILON {
            continue;
        }
        let score = products.at_lag(lag) / (energy_a * energy_b).sqrt();
        if score > best_score {
            best_score = score;
            best = Alignment {
                correlation: score.min(1.0) as f32,
                lag,
            };
        }
    }
    best
}

/// `energy[i]` is the sum of squares of the first `i` samples.
fn prefix_energy(signal: &[f32]) -> Vec<f64> {
    let mut energy = Vec::with_capacity(signal.len() + 1);
    let mut sum = 0.0f64;
    energy.push(0.0);
    for sample in signal {
        sum += f64::from(*sample) * f64::from(*sample);
        energy.push(sum);
    }
    energy
}

/// Every lagged dot product `Σ a[i]·b[i + lag]`, computed at once through an FFT.
struct CrossProducts {
    values: Vec<f64>,
}

impl CrossProducts {
    fn at_lag(&self, lag: i64) -> f64 {
        let n = self.values.len() as i64;
        let index = if lag >= 0 { lag } else { n + lag };
        self.values.get(index as usize).copied().unwrap_or(0.0)
    }
}

fn cross_products(a: &[f32], b: &[f32]) -> CrossProducts {
    // Zero padding to at least len(a) + len(b) keeps the circular correlation from wrapping.
    let n = (a.len() + b.len()).next_power_of_two();
    let mut fa = to_complex(a, n);
    let mut fb = to_complex(b, n);
    fft(&mut fa, false);
    fft(&mut fb, false);
    // conj(A)·B transforms back into Σ a[i]·b[i + k] at index k (negative k wrap to the end).
    let mut product: Vec<Complex> = fa.iter().zip(&fb).map(|(x, y)| x.conj().mul(*y)).collect();
    fft(&mut product, true);
    CrossProducts {
        values: product.iter().map(|c| c.re / n as f64).collect(),
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Complex {
    re: f64,
    im: f64,
}

impl Complex {
    fn mul(self, other: Complex) -> Complex {
        Complex {
            re: self.re * other.re - self.im * other.im,
            im: self.re * other.im + self.im * other.re,
        }
    }

    fn conj(self) -> Complex {
        Complex {
            re: self.re,
            im: -self.im,
        }
    }
}

fn to_complex(signal: &[f32], n: usize) -> Vec<Complex> {
    let mut out = vec![Complex::default(); n];
    for (slot, sample) in out.iter_mut().zip(signal) {
        slot.re = f64::from(*sample);
    }
    out
}

/// In-place iterative radix-2 FFT; `data.len()` must be a power of two. The inverse is
/// unscaled.
fn fft(data: &mut [Complex], inverse: bool) {
    let n = data.len();
    if n < 2 {
        return;
    }
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            data.swap(i, j);
        }
    }
    let sign = if inverse { 1.0 } else { -1.0 };
    let mut len = 2;
    while len <= n {
        let angle = sign * 2.0 * std::f64::consts::PI / len as f64;
        let step = Complex {
            re: angle.cos(),
            im: angle.sin(),
        };
        for chunk in data.chunks_exact_mut(len) {
            let (low, high) = chunk.split_at_mut(len / 2);
            let mut twiddle = Complex { re: 1.0, im: 0.0 };
            for (x, y) in low.iter_mut().zip(high.iter_mut()) {
                let t = y.mul(twiddle);
                *y = Complex {
                    re: x.re - t.re,
                    im: x.im - t.im,
                };
                *x = Complex {
                    re: x.re + t.re,
                    im: x.im + t.im,
                };
                twiddle = twiddle.mul(step);
            }
        }
        len <<= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// The direct O(n·lags) definition, to check the FFT path against.
    fn direct(a: &[f32], b: &[f32], lag: i64) -> f64 {
        (0..a.len() as i64)
            .filter(|i| (0..b.len() as i64).contains(&(i + lag)))
            .map(|i| f64::from(a[i as usize]) * f64::from(b[(i + lag) as usize]))
            .sum()
    }

    #[test]
    fn fft_products_match_the_definition() {
        let a = noise(300, 1);
        let b = noise(217, 2);
        let products = cross_products(&a, &b);
        for lag in [-250, -10, 0, 7, 200] {
            assert!(
                (products.at_lag(lag) - direct(&a, &b, lag)).abs() < 1e-9,
                "lag {lag}"
            );
        }
    }

    #[test]
    fn finds_a_delayed_and_scaled_copy() {
        let a = noise(4000, 3);
        let mut b = vec![0.0; 123];
        b.extend(a.iter().map(|s| s * 0.3));
        assert!(correlation(&a, &b, 200) > 0.999);
        assert_eq!(best_alignment(&a, &b, 200).lag, 123);
        assert_eq!(best_alignment(&b, &a, 200).lag, -123);
        assert!(correlation(&b, &a, 200) > 0.999);
        // Out of the lag window the copy is not found.
        assert!(correlation(&a, &b, 50) < 0.2);
    }

    #[test]
    fn unrelated_and_degenerate_signals() {
        assert!(correlation(&noise(4000, 4), &noise(4000, 5), 100) < 0.2);
        assert_eq!(correlation(&[], &[1.0], 10), 0.0);
        assert_eq!(correlation(&[0.0; 100], &noise(100, 6), 10), 0.0);
        let a = noise(100, 7);
        let inverted: Vec<f32> = a.iter().map(|s| -s).collect();
        assert!(correlation(&a, &inverted, 0) <= 0.0 + f32::EPSILON);
    }
}
