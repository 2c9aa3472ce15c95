//! `metrics.jsonl` and `loss.svg`: one JSON line per step and per evaluation, trimmed
//! back to the checkpoint on resume so a resumed log equals an uninterrupted one, and
//! the loss chart redrawn from it.

use super::*;

impl Trainer {
    pub(super) fn metrics_path(&self) -> PathBuf {
        self.out.join("metrics.jsonl")
    }

    /// Reads back the metrics log up to `step`, rewriting it without later lines.
    pub(super) fn trim_metrics(&mut self, step: u64) -> Result<()> {
        let path = self.metrics_path();
        let Ok(body) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut kept = String::new();
        self.losses.clear();
        self.evals.clear();
        self.doses.clear();
        for line in body.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue; // a line cut by the crash
            };
            let s = v["step"].as_u64().unwrap_or(u64::MAX);
            if s > step {
                continue;
            }
            if let Some(l) = v["loss"].as_f64() {
                self.losses.push((s, l));
                if let Ok(d) = serde_json::from_value::<Dose>(v["dose"].clone()) {
                    self.doses.push((s, v["epoch"].as_u64().unwrap_or(0), d));
                }
            }
            if let Some(m) = v["eval"].as_f64() {
                self.evals.push((s, m));
            }
            kept.push_str(line);
            kept.push('\n');
        }
        if !self.primary() {
            return Ok(()); // rank 0 rewrites the shared log
        }
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, kept).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    pub(super) fn append_metrics(&self, value: &serde_json::Value) -> Result<()> {
        if !self.primary() {
            return Ok(());
        }
        let path = self.metrics_path();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        writeln!(f, "{value}").map_err(io(&path))
    }

    pub(super) fn write_plot(&self) -> Result<()> {
        if !self.primary() {
            return Ok(());
        }
        let path = self.out.join("loss.svg");
        let svg = crate::plot::loss_svg(
            &format!("sieve train: {}", self.data.source),
            &self.losses,
            &self.evals,
            "dev metric",
            &self
                .doses
                .iter()
                .map(|(step, _, d)| (*step, d.any.mean))
                .collect::<Vec<_>>(),
        );
        let tmp = path.with_extension("svg.tmp");
        std::fs::write(&tmp, svg).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }
}
