//! Checkpoints: what a run writes so that `kill -9` and `--resume` end at the
//! uninterrupted run's weights (weights, AdamW moments, the data position, the corpus
//! table), the final export in the sentence-transformers layout, and finding the latest
//! complete checkpoint.

use super::*;

impl Trainer {
    pub(super) fn checkpoints_dir(&self) -> PathBuf {
        self.out.join("checkpoints")
    }

    /// Complete checkpoints (`step-N` directories; one being written has a dot
    /// prefix), by step.
    pub fn checkpoints(out: &Path) -> Result<Vec<(u64, PathBuf)>> {
        let dir = out.join("checkpoints");
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(found);
        };
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_prefix("step-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                if entry.path().join("trainer_state.json").exists() {
                    found.push((n, entry.path()));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Restores the latest checkpoint in the output directory; `false` when there is
    /// none (the run starts from the beginning).
    pub fn resume(&mut self) -> Result<bool> {
        let Some((step, dir)) = Self::checkpoints(&self.out)?.pop() else {
            return Ok(false);
        };
        let state_path = dir.join("trainer_state.json");
        let body = std::fs::read(&state_path).map_err(io(&state_path))?;
        let state: TrainState =
            serde_json::from_slice(&body).map_err(|e| ckpt_err(&state_path, e))?;
        if state.config.trajectory_key() != self.config.trajectory_key() {
            return Err(ckpt_err(
                &state_path,
                format!(
                    "was written with other training settings; resume with the same ones or use another output directory\n  checkpoint: {}\n  now:        {}",
                    state.config.trajectory_key(),
                    self.config.trajectory_key()
                ),
            ));
        }
        let now = &self.state;
        let mut changed = Vec::new();
        if (state.data_examples, state.data_texts) != (now.data_examples, now.data_texts) {
            changed.push(format!(
                "data: trained on {} examples / {} texts, given now {} / {}",
                state.data_examples, state.data_texts, now.data_examples, now.data_texts
            ));
        } else if state.data_fingerprint.is_some() && state.data_fingerprint != now.data_fingerprint
        {
            changed.push(format!(
                "data: the same counts ({} examples / {} texts) but other texts or pairings",
                now.data_examples, now.data_texts
            ));
        }
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        if state.max_seq_length.is_some() && state.max_seq_length != now.max_seq_length {
            changed.push(format!(
                "max_seq_length: {} then, {} now",
                state.max_seq_length.unwrap_or_default(),
                now.max_seq_length.unwrap_or_default()
            ));
        }
        if state.dtype.is_some() && state.dtype != now.dtype {
            changed.push(format!(
                "dtype: {} then, {} now",
                opt(&state.dtype),
                opt(&now.dtype)
            ));
        }
        if state.prompts != now.prompts {
            let show = |p: &Option<(String, String)>| match p {
                Some((q, d)) => format!("query {q:?}, document {d:?}"),
                None => "none".into(),
            };
            changed.push(format!(
                "prompts: {} then, {} now",
                show(&state.prompts),
                show(&now.prompts)
            ));
        }
        if !changed.is_empty() {
            return Err(ckpt_err(
                &state_path,
                format!(
                    "cannot resume: the result would differ from an uninterrupted run; resume with \
                     the same inputs or use another output directory\n  {}",
                    changed.join("\n  ")
                ),
            ));
        }
        let weights_path = dir.join("model.safetensors");
        let weights = candle_core::safetensors::load(&weights_path, self.encoder.device())?;
        for (name, var) in self.opt.named_vars() {
            let t = weights
                .get(name)
                .ok_or_else(|| ckpt_err(&weights_path, format!("no tensor {name:?}")))?;
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        self.opt.load(&dir.join("optimizer.safetensors"))?;
        if self.opt.step_count() != state.step {
            return Err(ckpt_err(
                &dir,
                format!(
                    "optimizer state is at step {}, trainer state at {}",
                    self.opt.step_count(),
                    state.step
                ),
            ));
        }
        let table_path = dir.join("table.safetensors");
        if table_path.exists() {
            let t = candle_core::safetensors::load(&table_path, &candle_core::Device::Cpu)?;
            let (Some(table), Some(refreshed)) = (t.get("table"), t.get("refreshed")) else {
                return Err(ckpt_err(&table_path, "no `table` / `refreshed` tensor"));
            };
            let (_, dim) = table.dims2()?;
            self.set_table(CorpusTable::from_normalized(
                table.flatten_all()?.to_vec1::<f32>()?,
                dim,
            ))?;
            self.table_refreshed = refreshed.to_vec1::<i64>()?.first().copied().unwrap_or(0) as u64;
        }
        // Clustered batching: the stored clusters are the ones the run was batched by
        // (recomputing them on another machine could round differently).
        let clusters_path = self.out.join("clusters.json");
        if self.clusters.is_some() && clusters_path.exists() {
            let body = std::fs::read(&clusters_path).map_err(io(&clusters_path))?;
            let v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| ckpt_err(&clusters_path, e))?;
            let stored: Vec<u32> = serde_json::from_value(v["assignment"].clone())
                .map_err(|e| ckpt_err(&clusters_path, e))?;
            if stored.len() != self.data.examples.len() {
                return Err(ckpt_err(
                    &clusters_path,
                    format!(
                        "clusters {} examples, the data has {}",
                        stored.len(),
                        self.data.examples.len()
                    ),
                ));
            }
            self.clusters = Some(stored);
        }
        self.schedule.total_steps = state.total_steps;
        self.schedule.warmup_steps =
            (self.config.warmup_ratio * state.total_steps as f64).ceil() as u64;
        self.state = state;
        self.resumed_from = Some(step);
        // Steps logged after the checkpoint will be taken again: drop them.
        self.trim_metrics(step)?;
        Ok(true)
    }

    /// The current weights by name, detached from the graph.
    pub fn weights(&self) -> HashMap<String, Tensor> {
        self.opt
            .named_vars()
            .map(|(n, v)| (n.to_string(), v.as_tensor().detach()))
            .collect()
    }

    /// A frozen copy of the model being trained (shares storage; no graph).
    pub fn snapshot(&self) -> Result<Encoder> {
        Ok(self.encoder.with_weights(
            self.weights(),
            format!(
                "{}+train-step-{}",
                self.encoder.fingerprint(),
                self.state.step
            ),
        )?)
    }

    /// Writes the current model in the sentence-transformers layout, with its model
    /// card (`README.md`).
    pub fn export(&self, dir: &Path) -> Result<()> {
        sieve_encoder::export::export(&self.encoder, &self.weights(), dir)?;
        let card = dir.join("README.md");
        let tmp = dir.join(".README.md.tmp");
        let written = std::fs::write(&tmp, self.model_card())
            .map_err(io(&tmp))
            .and_then(|_| std::fs::rename(&tmp, &card).map_err(io(&card)));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    pub(super) fn save_checkpoint(&self) -> Result<PathBuf> {
        let root = self.checkpoints_dir();
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        let name = format!("step-{}", self.state.step);
        let final_dir = root.join(&name);
        if final_dir.join("trainer_state.json").exists() {
            return Ok(final_dir);
        }
        let tmp = root.join(format!(".{name}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        // A failed write (a full disk) removes the half-written checkpoint: it is never
        // taken for a finished one (only `step-N/` is), but it would hold the space.
        let write = || -> Result<()> {
            sieve_encoder::export::save_tensors(&self.weights(), &tmp.join("model.safetensors"))?;
            let opt_path = tmp.join("optimizer.safetensors");
            self.opt.save(&opt_path)?;
            sieve_encoder::export::as_created(&opt_path).map_err(io(&opt_path))?;
            if let Some(table) = &self.table {
                let t = Tensor::from_slice(
                    &table.data,
                    (table.len(), table.dim),
                    &candle_core::Device::Cpu,
                )?;
                let refreshed =
                    Tensor::new(&[self.table_refreshed as i64], &candle_core::Device::Cpu)?;
                sieve_encoder::export::save_tensors(
                    &HashMap::from([
                        ("table".to_string(), t),
                        ("refreshed".to_string(), refreshed),
                    ]),
                    &tmp.join("table.safetensors"),
                )?;
            }
            let state_path = tmp.join("trainer_state.json");
            let body =
                serde_json::to_vec_pretty(&self.state).map_err(|e| ckpt_err(&state_path, e))?;
            std::fs::write(&state_path, body).map_err(io(&state_path))?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        sync_dir(&tmp);
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        sync_dir(&root);
        let all = Self::checkpoints(&self.out)?;
        let excess = all
            .len()
            .saturating_sub(self.config.keep_checkpoints.max(1));
        for (_, old) in all.into_iter().take(excess) {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        self.write_plot()?;
        Ok(final_dir)
    }
}
