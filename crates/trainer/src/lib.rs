//! Contrastive training of sieve encoders.
//!
//! [`optim::AdamW`] updates every parameter in place in one multithreaded pass and can
//! save and restore its moments, which candle-nn's optimiser can do neither of: a
//! training run must resume after a crash at the same weights it would have reached.

mod error;
pub mod optim;

pub use error::{Error, Result};
