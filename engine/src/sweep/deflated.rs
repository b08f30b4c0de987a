//! The deflated Sharpe ratio of Bailey and Lopez de Prado ("The Deflated Sharpe Ratio:
//! Correcting for Selection Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio
//! Management, 2014).
//!
//! It is the probability that the true Sharpe ratio of the best of N tried strategies is above
//! the Sharpe ratio that the best of N strategies with no skill would show by luck:
//!
//! - `SR0 = sqrt(V) x ((1 - g) x Z(1 - 1/N) + g x Z(1 - 1/(N e)))`, with V the variance of the
//!   tried Sharpe ratios, g the Euler-Mascheroni constant and Z the standard normal quantile;
//! - `DSR = Phi((SR - SR0) x sqrt(T - 1) / sqrt(1 - skew x SR + (kurtosis - 1) / 4 x SR^2))`,
//!   with SR the best per-bar Sharpe ratio, T the number of returns and the skewness and
//!   (non-excess) kurtosis of the best strategy's returns.
//!
//! All Sharpe ratios here are per bar, not annualized. A sweep passes every evaluated
//! combination as a trial and estimates V from the combinations whose Sharpe ratio is not
//! null.

/// Euler-Mascheroni constant.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Returns the standard normal cumulative distribution at `x`.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Returns the standard normal quantile of `p` in (0, 1): Acklam's rational approximation
/// refined by one Halley step, accurate to about 1e-15.
pub fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let estimate = if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    };
    // One Halley step on Phi(x) - p.
    let error = normal_cdf(estimate) - p;
    let step = error * (2.0 * std::f64::consts::PI).sqrt() * (estimate * estimate / 2.0).exp();
    estimate - step / (1.0 + estimate * step / 2.0)
}

/// Returns the Sharpe ratio that the best of `trials` skill-free strategies shows by luck,
/// given the variance of the tried Sharpe ratios; 0 for a single trial.
pub fn expected_max_sharpe(trials: usize, variance: f64) -> f64 {
    if trials < 2 {
        return 0.0;
    }
    let n = trials as f64;
    variance.sqrt()
        * ((1.0 - EULER_GAMMA) * normal_quantile(1.0 - 1.0 / n)
            + EULER_GAMMA * normal_quantile(1.0 - 1.0 / (n * std::f64::consts::E)))
}

/// Returns the deflated Sharpe ratio, a probability from 0 to 1, or `None` when it is not
/// defined (fewer than 2 returns, or a non-positive variance term).
pub fn deflated_sharpe_ratio(
    sharpe: f64,
    trials: usize,
    sharpe_variance: f64,
    returns: usize,
    skewness: f64,
    kurtosis: f64,
) -> Option<f64> {
    if returns < 2 || !sharpe.is_finite() {
        return None;
    }
    let threshold = expected_max_sharpe(trials, sharpe_variance.max(0.0));
    let spread = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe;
    if !(spread > 0.0 && spread.is_finite()) {
        return None;
    }
    let statistic = (sharpe - threshold) * ((returns - 1) as f64).sqrt() / spread.sqrt();
    Some(normal_cdf(statistic))
}

/// Returns the skewness and the non-excess kurtosis (3 for a normal sample) of `values`,
/// with population moments; `None` for fewer than 2 values or zero variance.
pub fn skewness_and_kurtosis(values: &[f64]) -> Option<(f64, f64)> {
    if values.len() < 2 {
        return None;
    }
    let count = values.len() as f64;
    let mean = values.iter().sum::<f64>() / count;
    let moment = |power: i32| {
        values
            .iter()
            .map(|value| (value - mean).powi(power))
            .sum::<f64>()
            / count
    };
    let variance = moment(2);
    if variance <= 0.0 {
        return None;
    }
    Some((
        moment(3) / variance.powf(1.5),
        moment(4) / (variance * variance),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_inverts_cdf() {
        for p in [1e-6, 0.01, 0.024, 0.3, 0.5, 0.8, 0.975, 0.999_999] {
            let x = normal_quantile(p);
            assert!((normal_cdf(x) - p).abs() < 1e-14 * p.max(1e-3), "{p}: {x}");
        }
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
    }
}
