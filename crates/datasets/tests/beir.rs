mod common;

use std::path::Path;

use common::{beir_dir, gzip, lenient, strict, write, CORPUS, QRELS, QUERIES};
use sieve_datasets::{
    load_beir, read_corpus, read_qrels, read_queries, CorpusReader, Document, Error, Issue,
    ValidationReport, MAX_EXAMPLES,
};

/// The message must start with `<path>:<rest>` exactly, so the file and line
/// are the first thing a user reads.
fn assert_message(err: &Error, path: &Path, rest: &str) {
    let msg = err.to_string();
    let want = format!("{}:{rest}", path.display());
    assert!(msg.starts_with(&want), "got  {msg:?}\nwant {want:?}…");
}

fn corpus_err(contents: &[u8]) -> (Error, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "corpus.jsonl", contents);
    let err = read_corpus(&path, &mut ValidationReport::default()).unwrap_err();
    (err, path, dir)
}

#[test]
fn loads_a_small_directory_in_qrels_order() {
    let dir = beir_dir(CORPUS, QUERIES, QRELS);
    let data = load_beir(dir.path(), "test", strict()).unwrap();
    let ids: Vec<&str> = data.corpus.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        ["d1", "d2", "3"],
        "integer _id becomes its decimal string"
    );
    assert_eq!(data.corpus[2].title, "", "missing title is empty");
    // q3 is not in the split; q2 comes first because qrels name it first.
    let qids: Vec<&str> = data.queries.iter().map(|q| q.id.as_str()).collect();
    assert_eq!(qids, ["q2", "q1"]);
    assert_eq!(data.qrels.len(), 2);
    assert_eq!(data.qrels["q1"]["d1"], 2);
    assert_eq!(
        data.qrels["q1"]["3"], 0,
        "zero scores are kept, as BEIR does"
    );
    assert!(data.report.is_clean(), "{}", data.report);
    assert_eq!(data.report.to_string(), "no problems found");
}

#[test]
fn full_text_matches_mteb() {
    let doc = |title: &str, text: &str| Document {
        id: "x".into(),
        title: title.into(),
        text: text.into(),
    };
    assert_eq!(doc("Title", "body.").full_text(), "Title body.");
    assert_eq!(doc("", "  body. ").full_text(), "body.");
    assert_eq!(doc(" T ", " body ").full_text(), "T   body");
    assert_eq!(doc("Title", "").full_text(), "Title");
}

#[test]
fn malformed_json_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "queries.jsonl",
        "{\"_id\": \"1\", \"text\": \"a\"}\n\n{\"_id\": \"2\", \"text\": \"b\"\n",
    );
    let err = read_queries(&path, &mut ValidationReport::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidJson { line: 3, .. }), "{err:?}");
    assert_message(&err, &path, "3: invalid JSON: ");
    assert!(
        !err.to_string().contains("line 1"),
        "serde's own line number would mislead: {err}"
    );
}

#[test]
fn a_json_value_that_is_not_an_object_is_rejected() {
    let (err, path, _dir) = corpus_err(b"[1, 2]\n");
    assert_message(&err, &path, "1: expected a JSON object, found array");
}

#[test]
fn missing_id_is_a_field_error() {
    let (err, path, _dir) =
        corpus_err(b"{\"_id\": \"a\", \"text\": \"x\"}\n{\"text\": \"no id\"}\n");
    assert_message(&err, &path, "2: field \"_id\": missing");
    assert!(matches!(err, Error::Field { line: 2, ref field, .. } if field == "_id"));
}

#[test]
fn bad_id_types_are_field_errors() {
    let (err, path, _dir) = corpus_err(b"{\"_id\": 1.5, \"text\": \"x\"}\n");
    assert_message(
        &err,
        &path,
        "1: field \"_id\": expected a string or an integer, found number",
    );
    let (err, path, _dir) = corpus_err(b"{\"_id\": \"\", \"text\": \"x\"}\n");
    assert_message(&err, &path, "1: field \"_id\": empty");
}

#[test]
fn non_string_text_is_a_field_error() {
    let (err, path, _dir) = corpus_err(b"\n\n\n{\"_id\": \"a\", \"text\": 42}\n");
    assert_message(
        &err,
        &path,
        "4: field \"text\": expected a string, found number",
    );
    let (err, path, _dir) = corpus_err(b"{\"_id\": \"a\", \"title\": [\"t\"], \"text\": \"x\"}\n");
    assert_message(
        &err,
        &path,
        "1: field \"title\": expected a string, found array",
    );
}

#[test]
fn invalid_utf8_names_the_line() {
    let mut bytes = b"{\"_id\": \"a\", \"text\": \"ok\"}\n".repeat(8);
    bytes.extend_from_slice(b"{\"_id\": \"b\", \"text\": \"caf\xe9\"}\n");
    let (err, path, _dir) = corpus_err(&bytes);
    assert!(matches!(err, Error::InvalidUtf8 { line: 9, .. }), "{err:?}");
    assert_message(&err, &path, "9: invalid UTF-8");

    // Same inside a gzip stream.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "corpus.jsonl.gz", gzip(&bytes));
    let err = read_corpus(&path, &mut ValidationReport::default()).unwrap_err();
    assert_message(&err, &path, "9: invalid UTF-8");
}

#[test]
fn crlf_and_byte_order_mark_are_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "corpus.jsonl",
        "\u{feff}{\"_id\": \"a\", \"text\": \"x\"}\r\n{\"_id\": \"b\", \"text\": \"y\"}\r\n",
    );
    let docs = read_corpus(&path, &mut ValidationReport::default()).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1].text, "y");
}

#[test]
fn streaming_reader_reports_lines_and_stops_after_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "corpus.jsonl",
        "{\"_id\": \"a\"}\n\n{\"_id\": \"b\"}\nnot json\n{\"_id\": \"c\"}\n",
    );
    let mut reader = CorpusReader::open(&path).unwrap();
    assert_eq!(reader.next().unwrap().unwrap().id, "a");
    assert_eq!(reader.line(), 1);
    assert_eq!(reader.next().unwrap().unwrap().id, "b");
    assert_eq!(reader.line(), 3);
    assert!(matches!(
        reader.next(),
        Some(Err(Error::InvalidJson { line: 4, .. }))
    ));
    assert!(reader.next().is_none(), "fused after an error");
}

#[test]
fn non_integer_qrels_score_is_a_field_error() {
    let dir = beir_dir(
        CORPUS,
        QUERIES,
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1.5\n",
    );
    let err = load_beir(dir.path(), "test", lenient()).unwrap_err();
    assert_message(
        &err,
        &dir.path().join("qrels/test.tsv"),
        "3: field \"score\": \"1.5\" is not an integer",
    );
}

#[test]
fn a_first_row_with_a_bad_number_is_not_taken_for_a_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "q.tsv", "q1\td1\t1.5\n");
    let err = read_qrels(&path, &mut ValidationReport::default()).unwrap_err();
    assert_message(&err, &path, "1: field \"score\": \"1.5\" is not an integer");
}

#[test]
fn wrong_qrels_column_count_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "q.tsv",
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n",
    );
    let err = read_qrels(&path, &mut ValidationReport::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Columns {
                line: 3,
                found: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_message(&err, &path, "3: expected 3 (query-id, corpus-id, score)");
    let path = write(dir.path(), "q5.tsv", "q1\t0\td1\t1\textra\n");
    let err = read_qrels(&path, &mut ValidationReport::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Columns {
                line: 1,
                found: 5,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn qrels_headers_are_optional_and_trec_form_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut report = ValidationReport::default();
    let no_header = read_qrels(
        &write(dir.path(), "a.tsv", "q1\td1\t1\n\nq1\td2\t2\n"),
        &mut report,
    )
    .unwrap();
    assert_eq!(no_header["q1"].len(), 2, "first row is data, not a header");
    let other_header = read_qrels(
        &write(dir.path(), "b.tsv", "qid\tdocid\trel\nq1\td1\t1\n"),
        &mut report,
    )
    .unwrap();
    assert_eq!(other_header.len(), 1);
    assert_eq!(other_header["q1"]["d1"], 1);
    let trec = read_qrels(
        &write(dir.path(), "c.qrels", "q1 0 d1 1\nq1 0 d2 0\nq2 0 d1 3\n"),
        &mut report,
    )
    .unwrap();
    assert_eq!(trec["q1"]["d2"], 0);
    assert_eq!(trec["q2"]["d1"], 3);
    assert!(report.is_clean());
}

#[test]
fn corpus_and_queries_can_be_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "corpus.jsonl.gz", gzip(CORPUS));
    write(dir.path(), "queries.jsonl.gz", gzip(QUERIES));
    write(dir.path(), "qrels/test.tsv", QRELS);
    let data = load_beir(dir.path(), "test", strict()).unwrap();
    assert_eq!(data.corpus.len(), 3);
    assert_eq!(data.corpus[1].full_text(), "Cats purr.");
    assert_eq!(data.queries.len(), 2);
}

#[test]
fn plain_file_wins_over_gz_and_missing_files_name_their_path() {
    let dir = beir_dir(CORPUS, QUERIES, QRELS);
    write(
        dir.path(),
        "corpus.jsonl.gz",
        gzip("{\"_id\": \"only-in-gz\"}\n"),
    );
    let data = load_beir(dir.path(), "test", lenient()).unwrap();
    assert_eq!(data.corpus.len(), 3);

    let err = load_beir(dir.path(), "dev", lenient()).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("qrels/dev.tsv")),
        "{err:?}"
    );
    std::fs::remove_file(dir.path().join("queries.jsonl")).unwrap();
    let err = load_beir(dir.path(), "test", lenient()).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("queries.jsonl")),
        "{err:?}"
    );
}

#[test]
fn duplicate_doc_ids_keep_the_first_and_are_counted() {
    let corpus = format!("{CORPUS}{{\"_id\": \"d1\", \"text\": \"second copy\"}}\n");
    let dir = beir_dir(&corpus, QUERIES, QRELS);
    let data = load_beir(dir.path(), "test", lenient()).unwrap();
    assert_eq!(data.corpus.len(), 3);
    assert_eq!(data.corpus[0].text, "Ronald Reagan was a Republican.");
    assert_eq!(data.report.duplicate_doc_ids, 1);
    let ex: Vec<_> = data.report.examples_of(Issue::DuplicateDocId).collect();
    assert_eq!((ex[0].id.as_str(), ex[0].line), ("d1", 4));
    assert!(
        data.report.to_string().contains("corpus.jsonl:4"),
        "{}",
        data.report
    );

    let err = load_beir(dir.path(), "test", strict()).unwrap_err();
    let Error::Strict { report } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(report.duplicate_doc_ids, 1);
    assert!(
        err.to_string().contains("1 duplicate document ids"),
        "{err}"
    );
}

#[test]
fn duplicate_query_ids_count_only_in_the_split() {
    let queries = format!(
        "{QUERIES}{{\"_id\": \"q1\", \"text\": \"dup in split\"}}\n{{\"_id\": \"q3\", \"text\": \"dup outside\"}}\n"
    );
    let dir = beir_dir(CORPUS, &queries, QRELS);
    let data = load_beir(dir.path(), "test", lenient()).unwrap();
    assert_eq!(data.report.duplicate_query_ids, 1);
    assert_eq!(data.queries[1].text, "was reagan a democrat?", "first kept");
    assert!(load_beir(dir.path(), "test", strict()).is_err());

    // read_queries looks at the whole file.
    let mut report = ValidationReport::default();
    let all = read_queries(&dir.path().join("queries.jsonl"), &mut report).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(report.duplicate_query_ids, 2);
}

#[test]
fn qrels_with_unknown_ids_are_kept_and_counted() {
    let qrels = format!("{QRELS}q1\tghost-doc\t1\nq9\td1\t1\nq9\td2\t1\n");
    let dir = beir_dir(CORPUS, QUERIES, &qrels);
    let data = load_beir(dir.path(), "test", lenient()).unwrap();
    assert_eq!(data.report.qrels_unknown_doc, 1);
    assert_eq!(data.report.qrels_unknown_query, 2, "counted per qrels row");
    assert_eq!(
        data.qrels["q1"]["ghost-doc"], 1,
        "still relevant, just unretrievable"
    );
    assert!(data.qrels.contains_key("q9"));
    assert_eq!(data.queries.len(), 2, "a query without text cannot be run");
    let ex: Vec<_> = data.report.examples_of(Issue::QrelsUnknownDoc).collect();
    assert_eq!((ex[0].id.as_str(), ex[0].line), ("ghost-doc", 5));

    let err = load_beir(dir.path(), "test", strict()).unwrap_err();
    let Error::Strict { report } = err else {
        panic!()
    };
    assert_eq!(
        (report.qrels_unknown_doc, report.qrels_unknown_query),
        (1, 2)
    );
}

#[test]
fn duplicate_qrels_keep_the_last_score_like_beir() {
    let qrels = format!("{QRELS}q1\td1\t1\n");
    let dir = beir_dir(CORPUS, QUERIES, &qrels);
    let data = load_beir(dir.path(), "test", lenient()).unwrap();
    assert_eq!(data.qrels["q1"]["d1"], 1);
    assert_eq!(data.report.duplicate_qrels, 1);
    assert!(load_beir(dir.path(), "test", strict()).is_err());
}

#[test]
fn empty_texts_are_kept_and_counted() {
    let corpus = format!("{CORPUS}{{\"_id\": \"e1\", \"title\": \"only a title\"}}\n{{\"_id\": \"e2\", \"text\": \"  \"}}\n");
    let queries = format!("{QUERIES}{{\"_id\": \"q4\", \"text\": \"\"}}\n{{\"_id\": \"q5\"}}\n");
    let qrels = format!("{QRELS}q4\td1\t1\n");
    let dir = beir_dir(&corpus, &queries, &qrels);
    let data = load_beir(dir.path(), "test", lenient()).unwrap();
    assert_eq!(data.corpus.len(), 5);
    assert_eq!(data.report.empty_docs, 2);
    assert_eq!(data.report.empty_queries, 1, "q5 is not in the split");
    assert_eq!(data.queries.last().unwrap().id, "q4");
    let shown = data.report.to_string();
    assert!(
        shown.contains("2 empty or missing document texts"),
        "{shown}"
    );
    assert!(
        !shown.contains("duplicate"),
        "zero counts are not listed: {shown}"
    );

    let err = load_beir(dir.path(), "test", strict()).unwrap_err();
    let Error::Strict { report } = err else {
        panic!()
    };
    assert_eq!((report.empty_docs, report.empty_queries), (2, 1));
}

#[test]
fn report_keeps_a_few_examples_and_says_how_many_more() {
    let corpus: String = (0..MAX_EXAMPLES + 3)
        .map(|_| "{\"_id\": \"same\", \"text\": \"x\"}\n")
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "corpus.jsonl", corpus);
    let mut report = ValidationReport::default();
    read_corpus(&path, &mut report).unwrap();
    assert_eq!(report.duplicate_doc_ids, MAX_EXAMPLES + 2);
    assert_eq!(
        report.examples_of(Issue::DuplicateDocId).count(),
        MAX_EXAMPLES
    );
    assert!(report.to_string().ends_with("... and 2 more"), "{report}");
}

#[test]
fn a_large_corpus_loads_in_linear_time() {
    // 200k documents with ids that collide in every prefix; anything
    // quadratic would take minutes.
    let dir = tempfile::tempdir().unwrap();
    let mut corpus = String::new();
    for i in 0..200_000 {
        corpus.push_str(&format!(
            "{{\"_id\": \"doc-{i:07}\", \"title\": \"t\", \"text\": \"some text {i}\"}}\n"
        ));
    }
    let path = write(dir.path(), "corpus.jsonl", corpus);
    let start = std::time::Instant::now();
    let docs = read_corpus(&path, &mut ValidationReport::default()).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(docs.len(), 200_000);
    assert!(elapsed.as_secs_f64() < 10.0, "took {elapsed:?}");
}
