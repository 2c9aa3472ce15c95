//! Learning-rate schedules with linear warmup, as `transformers`' `get_*_schedule_with_warmup`
//! (which sentence-transformers uses): the rate rises linearly from 0 over the warmup
//! steps, then decays to 0 at the last step.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Linear to 0 (`get_linear_schedule_with_warmup`, sentence-transformers' default).
    #[default]
    Linear,
    /// Half a cosine to 0 (`get_cosine_schedule_with_warmup`).
    Cosine,
    /// Constant after warmup (`get_constant_schedule_with_warmup`).
    Constant,
}

/// The rate for step `step` (0-based: the rate used by the `step+1`-th update).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub decay: Decay,
}

impl Schedule {
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = (step - self.warmup_steps) as f64 / span;
        match self.decay {
            Decay::Constant => self.lr,
            Decay::Linear => self.lr * (1.0 - progress).max(0.0),
            Decay::Cosine => {
                self.lr * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_transformers_schedules() {
        // transformers: lr_lambda(step) = step / max(1, warmup) during warmup, then
        // max(0, (total - step) / max(1, total - warmup)) for linear.
        let s = Schedule {
            lr: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            decay: Decay::Linear,
        };
        assert_eq!(s.lr_at(0), 0.0);
        assert!((s.lr_at(5) - 0.5).abs() < 1e-15);
        assert_eq!(s.lr_at(10), 1.0);
        assert!((s.lr_at(60) - 0.5).abs() < 1e-15);
        assert_eq!(s.lr_at(110), 0.0);
        assert_eq!(s.lr_at(500), 0.0);
        let c = Schedule {
            decay: Decay::Cosine,
            ..s
        };
        assert!((c.lr_at(60) - 0.5).abs() < 1e-12);
        assert!((c.lr_at(35) - 0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos())).abs() < 1e-12);
        let k = Schedule {
            decay: Decay::Constant,
            ..s
        };
        assert_eq!(k.lr_at(100), 1.0);
    }
}
