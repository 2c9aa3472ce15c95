use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use sieve_datasets::parquet_io::{
    read_metadata, read_parquet, write_parquet, BatchReader, Metadata, ParquetWriter,
};

fn sample() -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("score", DataType::Float32, true),
    ]));
    let batches = (0..3)
        .map(|b| {
            let ids: Vec<String> = (0..100).map(|i| format!("q{b}-{i}")).collect();
            let scores: Vec<Option<f32>> = (0..100)
                .map(|i| (i % 7 != 0).then_some(i as f32 * 0.5))
                .collect();
            let cols: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(Float32Array::from(scores)),
            ];
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        })
        .collect();
    (schema, batches)
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[test]
fn round_trip_preserves_rows_schema_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mined.parquet");
    let (schema, batches) = sample();
    let metadata: Metadata = [
        ("base_model", "all-MiniLM-L6-v2"),
        ("k", "100"),
        ("prompt_hash", "ab12"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    write_parquet(&path, schema.clone(), batches.clone(), &metadata).unwrap();
    assert!(leftovers(dir.path()).is_empty());

    let back = read_parquet(&path).unwrap();
    assert_eq!(back.metadata, metadata, "arrow's own schema key is hidden");
    assert_eq!(back.schema.fields(), schema.fields());
    let rows: usize = back.batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 300);
    let all = arrow::compute::concat_batches(&schema, &back.batches).unwrap();
    let want = arrow::compute::concat_batches(&schema, &batches).unwrap();
    assert_eq!(all, want);
    assert_eq!(read_metadata(&path).unwrap(), metadata);
    let streamed = BatchReader::open(&path).unwrap();
    assert_eq!(streamed.metadata(), &metadata);
    assert_eq!(streamed.map(|b| b.unwrap().num_rows()).sum::<usize>(), 300);
}

#[test]
fn unfinished_writer_leaves_the_old_file_and_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.parquet");
    let (schema, batches) = sample();
    write_parquet(
        &path,
        schema.clone(),
        batches[..1].to_vec(),
        &Metadata::new(),
    )
    .unwrap();
    {
        let mut writer = ParquetWriter::create(&path, schema.clone(), &Metadata::new()).unwrap();
        writer.write(&batches[1]).unwrap();
        writer.write(&batches[2]).unwrap();
        assert_eq!(
            leftovers(dir.path()).len(),
            1,
            "writes go to a temp file first"
        );
        // Dropped without finish(), as on an error or a crash mid-run.
    }
    assert!(leftovers(dir.path()).is_empty());
    let back = read_parquet(&path).unwrap();
    assert_eq!(
        back.batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        100,
        "old file intact"
    );
}

#[test]
fn a_batch_with_the_wrong_schema_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.parquet");
    let (schema, _) = sample();
    let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(
        other,
        vec![Arc::new(StringArray::from(vec!["a"])) as ArrayRef],
    )
    .unwrap();
    let err = write_parquet(&path, schema, [batch], &Metadata::new()).unwrap_err();
    assert!(
        err.to_string().starts_with(&path.display().to_string()),
        "{err}"
    );
    assert!(!path.exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn reading_a_non_parquet_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not.parquet");
    std::fs::write(&path, b"definitely not parquet").unwrap();
    let err = read_parquet(&path).unwrap_err();
    assert!(
        matches!(err, sieve_datasets::Error::Parquet { .. }),
        "{err:?}"
    );
    assert!(err.to_string().starts_with(&path.display().to_string()));
}
