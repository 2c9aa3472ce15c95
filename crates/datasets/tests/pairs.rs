mod common;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Array, LargeStringArray, ListBuilder, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use common::{gzip, lenient, strict, write};
use sieve_datasets::parquet_io::{read_parquet, write_parquet, Metadata};
use sieve_datasets::{read_pairs, write_pairs_parquet, Error, Pair, PairReader};

fn pair(q: &str, p: &str, negs: &[&str]) -> Pair {
    Pair {
        query: q.into(),
        positive: p.into(),
        negatives: negs.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn jsonl_pairs_with_every_negative_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "pairs.jsonl",
        concat!(
            r#"{"query": "q1", "positive": "p1", "qid": 7}"#,
            "\n",
            "\n",
            r#"{"anchor": "q2", "positive": "p2", "negative": "n"}"#,
            "\n",
            r#"{"query": "q3", "positive": "p3", "negative_10": "n10", "negative_2": "n2", "negative_1": "n1", "negative_x": "ignored"}"#,
            "\n",
            r#"{"query": "q4", "positive": "p4", "negatives": ["a", null, "b"], "negative_1": null}"#,
            "\n",
        ),
    );
    let (pairs, report) = read_pairs(&path, strict()).unwrap();
    assert_eq!(
        pairs,
        [
            pair("q1", "p1", &[]),
            pair("q2", "p2", &["n"]),
            pair("q3", "p3", &["n1", "n2", "n10"]),
            pair("q4", "p4", &["a", "b"]),
        ]
    );
    assert!(report.is_clean());
}

#[test]
fn gzipped_jsonl_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "pairs.jsonl.gz",
        gzip("{\"anchor\": \"a\", \"positive\": \"b\"}\n"),
    );
    let (pairs, _) = read_pairs(&path, strict()).unwrap();
    assert_eq!(pairs, [pair("a", "b", &[])]);
}

#[test]
fn jsonl_pair_errors_name_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "{\"positive\": \"p\"}",
            "field \"query\": missing (nor \"anchor\")",
        ),
        ("{\"query\": \"q\"}", "field \"positive\": missing"),
        (
            "{\"query\": 1, \"positive\": \"p\"}",
            "field \"query\": expected a string, found number",
        ),
        (
            "{\"query\": \"q\", \"positive\": \"p\", \"negatives\": [\"a\", 3]}",
            "field \"negatives\": item 2: expected a string, found number",
        ),
        (
            "{\"query\": \"q\", \"positive\": \"p\", \"negative\": {}}",
            "field \"negative\": expected a string or a list of strings, found object",
        ),
        ("{\"query\": \"q\",", "invalid JSON: "),
    ];
    for (bad, want) in cases {
        let path = write(
            dir.path(),
            "p.jsonl",
            format!("{{\"query\": \"ok\", \"positive\": \"ok\"}}\n{bad}\n"),
        );
        let err = read_pairs(&path, lenient()).unwrap_err();
        let want = format!("{}:2: {want}", path.display());
        assert!(err.to_string().starts_with(&want), "got {err}\nwant {want}");
    }
}

#[test]
fn streaming_reader_yields_good_rows_before_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "p.jsonl",
        "{\"query\": \"a\", \"positive\": \"b\"}\n{\"query\": \"c\", \"positive\": \"d\"}\n{}\n",
    );
    let mut reader = PairReader::open(&path).unwrap();
    assert_eq!(reader.next().unwrap().unwrap().query, "a");
    assert_eq!(reader.next().unwrap().unwrap().query, "c");
    assert_eq!(reader.line(), 2);
    assert!(matches!(
        reader.next(),
        Some(Err(Error::Field { line: 3, .. }))
    ));
    assert!(reader.next().is_none());
}

#[test]
fn tsv_pairs_with_sentence_transformers_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "triplets.tsv",
        "anchor\tpositive\tnegative_2\tnegative_1\nq1\tp1\tn2\tn1\nq2\tp2\t\tonly\n\n",
    );
    let (pairs, report) = read_pairs(&path, strict()).unwrap();
    assert_eq!(
        pairs,
        [pair("q1", "p1", &["n1", "n2"]), pair("q2", "p2", &["only"])]
    );
    assert!(report.is_clean());
}

#[test]
fn tsv_pair_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "a.tsv", "query\tpositive\nq\tp\nq\tp\textra\n");
    let err = read_pairs(&path, lenient()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Columns {
                line: 3,
                found: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "{}:3: expected 2 (as in the header) columns, found 3",
            path.display()
        )),
        "{err}"
    );

    let path = write(dir.path(), "b.tsv", "question\tanswer\nq\tp\n");
    let err = read_pairs(&path, lenient()).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "{}:1: field \"query\": missing (nor \"anchor\") from the header",
            path.display()
        )),
        "{err}"
    );

    let path = write(dir.path(), "c.tsv", "");
    assert!(matches!(
        read_pairs(&path, lenient()),
        Err(Error::Format { .. })
    ));
}

#[test]
fn empty_texts_in_pairs_are_counted_and_strict_rejects_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "p.jsonl",
        "{\"query\": \" \", \"positive\": \"p\"}\n{\"query\": \"q\", \"positive\": \"\", \"negatives\": [\"\"]}\n",
    );
    let (pairs, report) = read_pairs(&path, lenient()).unwrap();
    assert_eq!(pairs.len(), 2, "kept");
    assert_eq!((report.empty_queries, report.empty_docs), (1, 2));
    let err = read_pairs(&path, strict()).unwrap_err();
    assert!(matches!(err, Error::Strict { .. }), "{err:?}");
}

#[test]
fn unknown_extension_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "pairs.csv", "query,positive\n");
    let err = read_pairs(&path, lenient()).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
}

#[test]
fn parquet_pairs_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.parquet");
    let pairs: Vec<Pair> = (0..20_000)
        .map(|i| {
            let negs: Vec<String> = (0..i % 4).map(|j| format!("neg {i} {j} é")).collect();
            Pair {
                query: format!("query {i}"),
                positive: format!("positive {i}"),
                negatives: negs,
            }
        })
        .collect();
    write_pairs_parquet(&path, &pairs).unwrap();
    let (back, report) = read_pairs(&path, strict()).unwrap();
    assert_eq!(back, pairs);
    assert!(report.is_clean());
    let contents = read_parquet(&path).unwrap();
    let names: Vec<&str> = contents
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["query", "positive", "negatives"]);
    assert!(
        matches!(contents.schema.field(2).data_type(), DataType::List(f) if *f.data_type() == DataType::Utf8)
    );
}

/// A file as another tool might write it: sentence-transformers names,
/// large strings, numbered negatives with nulls, an unrelated column.
#[test]
fn parquet_with_anchor_names_and_numbered_negatives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("st.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("anchor", DataType::LargeUtf8, false),
        Field::new("positive", DataType::Utf8, false),
        Field::new("negative_2", DataType::Utf8, true),
        Field::new("negative_1", DataType::Utf8, true),
        Field::new(
            "negatives",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            true,
        ),
    ]));
    let mut list = ListBuilder::new(StringBuilder::new());
    list.values().append_value("l1");
    list.append(true);
    list.append(false);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2])),
        Arc::new(LargeStringArray::from(vec!["a1", "a2"])),
        Arc::new(StringArray::from(vec!["p1", "p2"])),
        Arc::new(StringArray::from(vec![Some("n2"), None])),
        Arc::new(StringArray::from(vec![Some("n1"), Some("m1")])),
        Arc::new(list.finish()),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    write_parquet(&path, schema, [batch], &Metadata::new()).unwrap();
    let (pairs, _) = read_pairs(&path, strict()).unwrap();
    assert_eq!(
        pairs,
        [
            pair("a1", "p1", &["n1", "n2", "l1"]),
            pair("a2", "p2", &["m1"])
        ]
    );
}

#[test]
fn parquet_null_query_and_wrong_types_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nulls.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("query", DataType::Utf8, true),
        Field::new("positive", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![Some("q1"), None, Some("q3")])),
            Arc::new(StringArray::from(vec!["p1", "p2", "p3"])),
        ],
    )
    .unwrap();
    write_parquet(&path, schema, [batch], &Metadata::new()).unwrap();
    let mut reader = PairReader::open(&path).unwrap();
    assert_eq!(reader.next().unwrap().unwrap().query, "q1");
    let err = reader.next().unwrap().unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2: field \"query\": null", path.display())),
        "{err}"
    );

    let path = dir.path().join("types.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("query", DataType::Utf8, false),
        Field::new("positive", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["q"])),
            Arc::new(Int64Array::from(vec![1])),
        ],
    )
    .unwrap();
    write_parquet(&path, schema, [batch], &Metadata::new()).unwrap();
    let err = read_pairs(&path, lenient()).unwrap_err();
    assert!(
        err.to_string()
            .contains("column \"positive\": expected strings, found Int64"),
        "{err}"
    );
}

/// Readers move into worker threads and errors into `anyhow`; both need
/// `Send` (+ `Sync` for errors). A regression fails to compile.
#[test]
fn readers_and_errors_cross_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync + 'static>() {}
    send::<PairReader>();
    send::<sieve_datasets::CorpusReader>();
    send::<sieve_datasets::parquet_io::BatchReader>();
    send_sync::<Error>();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "p.jsonl",
        "{\"query\": \"q\", \"positive\": \"p\"}\n",
    );
    let reader = PairReader::open(&path).unwrap();
    let n = std::thread::spawn(move || reader.count()).join().unwrap();
    assert_eq!(n, 1);
}
