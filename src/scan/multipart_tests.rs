//! Tests for the multipart model scanner: boundary parsing, table cases fed at every split
//! point, and property tests (random bytes and chunkings never panic and agree with one-shot
//! feeding; generated bodies with a random file part always yield their model).

use proptest::prelude::*;
use proptest::sample::Index;

use super::multipart::{
    boundary, MultipartModelScanner, MAX_BOUNDARY_BYTES, MAX_HEADER_LINE_BYTES,
};
use super::tests::cut_points;
use super::*;

type Outcome = (Result<String, ScanError>, Option<Range<usize>>);

/// Feeds `body` split at `cuts` (sorted, each <= len) and checks the feed/finish contract.
fn run(boundary: &[u8], body: &[u8], cuts: &[usize]) -> Outcome {
    let mut scanner = MultipartModelScanner::new(boundary);
    let mut start = 0;
    let mut found = false;
    let mut first_error: Option<ScanError> = None;
    for &end in cuts.iter().chain(std::iter::once(&body.len())) {
        match scanner.feed(&body[start..end]) {
            Ok(status) => {
                assert!(first_error.is_none(), "Ok after an error");
                if status == ScanStatus::Found {
                    found = true;
                } else {
                    assert!(!found, "NeedMore after Found");
                }
                assert_eq!(scanner.model().is_some(), found);
            }
            Err(error) => match &first_error {
                Some(first) => assert_eq!(first, &error, "errors are sticky"),
                None => first_error = Some(error),
            },
        }
        start = end;
    }
    assert_eq!(scanner.bytes_seen(), body.len());
    let result = scanner.finish().map(str::to_owned);
    if let Some(error) = first_error {
        assert_eq!(result, Err(error));
    }
    assert_eq!(
        scanner.finish().map(str::to_owned),
        result,
        "finish is sticky"
    );
    let span = scanner.model_span();
    if let (Ok(model), Some(span)) = (&result, &span) {
        assert_eq!(
            &body[span.clone()],
            model.as_bytes(),
            "span holds the model"
        );
    }
    (result, span)
}

/// Runs `body` whole, byte by byte, at every split point and (for short bodies) every pair.
fn run_all_splits(boundary: &[u8], body: &[u8]) -> Outcome {
    let whole = run(boundary, body, &[]);
    let bytewise: Vec<usize> = (1..body.len()).collect();
    assert_eq!(run(boundary, body, &bytewise), whole, "byte by byte");
    for i in 0..=body.len() {
        assert_eq!(run(boundary, body, &[i]), whole, "split at {i}");
    }
    if body.len() <= 160 {
        for i in 0..=body.len() {
            for j in i..=body.len() {
                assert_eq!(run(boundary, body, &[i, j]), whole, "split at {i} and {j}");
            }
        }
    }
    whole
}

/// A form part with the given disposition parameters and content.
fn part(disposition: &str, content: &[u8]) -> Vec<u8> {
    let mut out =
        format!("--BND\r\nContent-Disposition: form-data; {disposition}\r\n\r\n").into_bytes();
    out.extend_from_slice(content);
    out.extend_from_slice(b"\r\n");
    out
}

/// Parts joined into a body with boundary `BND` and the close delimiter.
fn form(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut body = parts.concat();
    body.extend_from_slice(b"--BND--\r\n");
    body
}

fn invalid(offset: usize) -> Result<&'static str, ScanError> {
    Err(ScanError::InvalidMultipart { offset })
}

#[test]
fn boundary_is_parsed_from_the_content_type() {
    let long = "b".repeat(MAX_BOUNDARY_BYTES);
    let too_long = "b".repeat(MAX_BOUNDARY_BYTES + 1);
    let cases: Vec<(String, Option<&str>)> = vec![
        ("multipart/form-data; boundary=abc".into(), Some("abc")),
        ("multipart/form-data;boundary=abc".into(), Some("abc")),
        ("Multipart/Form-Data; BOUNDARY=abc".into(), Some("abc")),
        (
            "multipart/form-data; charset=utf-8; boundary=a-b_c.d".into(),
            Some("a-b_c.d"),
        ),
        (
            "multipart/form-data; boundary=abc; charset=utf-8".into(),
            Some("abc"),
        ),
        ("multipart/form-data; boundary=abc;".into(), Some("abc")),
        (
            "multipart/form-data; boundary=\"a b:c\"".into(),
            Some("a b:c"),
        ),
        (
            "multipart/form-data; boundary=\"a\\\"b\"".into(),
            Some("a\"b"),
        ),
        (
            "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW".into(),
            Some("----WebKitFormBoundary7MA4YWxkTrZu0gW"),
        ),
        (" multipart/form-data ;\tboundary=abc ".into(), Some("abc")),
        (
            format!("multipart/form-data; boundary={long}"),
            Some(long.as_str()),
        ),
        (format!("multipart/form-data; boundary={too_long}"), None),
        ("multipart/form-data".into(), None),
        ("multipart/form-data; boundary=".into(), None),
        ("multipart/form-data; boundary=\"\"".into(), None),
        (
            "multipart/form-data; boundary=\"ends in space \"".into(),
            None,
        ),
        ("multipart/form-data; boundary=\"a\rb\"".into(), None),
        ("multipart/form-data; boundary=a; boundary=b".into(), None),
        ("multipart/form-data; boundary".into(), None),
        ("multipart/form-data; boundary=a b".into(), None),
        ("multipart/mixed; boundary=abc".into(), None),
        ("application/json".into(), None),
        ("".into(), None),
    ];
    for (content_type, expected) in cases {
        assert_eq!(
            boundary(content_type.as_bytes()).as_deref(),
            expected.map(str::as_bytes),
            "{content_type:?}"
        );
    }
    assert_eq!(boundary(b"multipart/form-data; boundary=\xff"), None);
}

#[test]
fn table_cases_agree_at_every_split_point() {
    use ScanError::*;
    let file = part(
        "name=\"file\"; filename=\"a.wav\"",
        b"RIFF\r\n--BN\r\n--BNX\r\r\n-\r\n--bnd\x00\xff--BND",
    );
    let model = part("name=\"model\"", b"whisper-1");
    let at_cap = "m".repeat(MAX_MODEL_BYTES);
    let over_cap = "m".repeat(MAX_MODEL_BYTES + 1);
    let long_header = format!(
        "--BND\r\nX-Long: {}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--BND--",
        "h".repeat(MAX_HEADER_LINE_BYTES * 2)
    );
    let long_disposition = format!(
        "--BND\r\nContent-Disposition: form-data; name=\"model\"; filename=\"{}\"\r\n\r\nm\r\n\
         --BND--",
        "f".repeat(MAX_HEADER_LINE_BYTES)
    );
    let model_only = || form(std::slice::from_ref(&model));
    let attachment = b"--BND\r\nContent-Disposition: attachment; name=\"model\"\r\n\r\nm\r\n";
    let cases: Vec<(&str, Vec<u8>, Result<&str, ScanError>)> = vec![
        (
            "model after file",
            form(&[file.clone(), model.clone()]),
            Ok("whisper-1"),
        ),
        (
            "model before file",
            form(&[model.clone(), file.clone()]),
            Ok("whisper-1"),
        ),
        (
            "model between fields",
            form(&[
                part("name=\"language\"", b"en"),
                model.clone(),
                part("name=\"temperature\"", b"0.2"),
            ]),
            Ok("whisper-1"),
        ),
        ("model only", model_only(), Ok("whisper-1")),
        ("empty model", form(&[part("name=\"model\"", b"")]), Ok("")),
        (
            "value with line breaks and dashes",
            form(&[part("name=\"model\"", b"a\r\n--b\r\n-- BND\r\n")]),
            Ok("a\r\n--b\r\n-- BND\r\n"),
        ),
        (
            "utf-8 value",
            form(&[part("name=\"model\"", "mod\u{e8}le".as_bytes())]),
            Ok("mod\u{e8}le"),
        ),
        (
            "preamble and epilogue",
            [
                b"preamble --BND\r\n\r\n".as_slice(),
                &model_only(),
                b"epilogue --BND\r\n",
            ]
            .concat(),
            Ok("whisper-1"),
        ),
        (
            "leading CRLF",
            [b"\r\n".as_slice(), &model_only()].concat(),
            Ok("whisper-1"),
        ),
        (
            "padding after delimiters",
            concat!(
                "--BND \t\r\nContent-Disposition: form-data; name=model\r\n\r\n",
                "m\r\n--BND-- \r\n"
            )
            .into(),
            Ok("m"),
        ),
        (
            "header variants",
            concat!(
                "--BND\r\ncontent-type: text/plain\r\n",
                "CONTENT-DISPOSITION:form-data;NAME=model ; x=\"y;z\"\r\n\r\nm\r\n--BND--"
            )
            .into(),
            Ok("m"),
        ),
        (
            "quoted pair in the name",
            form(&[part("name=\"mo\\del\"", b"m")]),
            Ok("m"),
        ),
        (
            "unterminated file name after the name",
            form(&[part("name=\"model\"; filename=\"C:\\dir\\\"", b"m")]),
            Ok("m"),
        ),
        (
            "file part named model",
            form(&[part("name=\"model\"; filename=\"m.txt\"", b"m")]),
            Ok("m"),
        ),
        (
            "no close delimiter after the model",
            [model.as_slice(), b"--BND\r\n"].concat(),
            Ok("whisper-1"),
        ),
        (
            "truncated after the model",
            [model.as_slice(), b"--BND\r\nCont"].concat(),
            Ok("whisper-1"),
        ),
        (
            "garbage after the model",
            [model.as_slice(), b"--BNDx"].concat(),
            Ok("whisper-1"),
        ),
        (
            "value at the cap",
            form(&[part("name=\"model\"", at_cap.as_bytes())]),
            Ok(at_cap.as_str()),
        ),
        ("long other header", long_header.into_bytes(), Ok("m")),
        // Not the model.
        (
            "other names",
            form(&[part("name=\"Model\"", b"a"), part("name=\"models\"", b"b")]),
            Err(MissingModel),
        ),
        (
            "attachment",
            form(&[part("name=\"x\"", b"a"), attachment.to_vec()]),
            Err(MissingModel),
        ),
        (
            "no disposition",
            form(&[b"--BND\r\nContent-Type: text/plain\r\n\r\nmodel\r\n".to_vec()]),
            Err(MissingModel),
        ),
        (
            "no headers",
            form(&[b"--BND\r\n\r\nname=\"model\"\r\n".to_vec()]),
            Err(MissingModel),
        ),
        (
            "filename*",
            form(&[part("filename*=UTF-8''model; name=\"file\"", b"m")]),
            Err(MissingModel),
        ),
        ("empty form", b"--BND--".to_vec(), Err(MissingModel)),
        // Rejected.
        (
            "duplicate model",
            form(&[model.clone(), file.clone(), part("name=model", b"x")]),
            Err(DuplicateModel),
        ),
        (
            "value over the cap",
            form(&[part("name=\"model\"", over_cap.as_bytes())]),
            Err(ModelTooLong),
        ),
        (
            "invalid utf-8",
            form(&[part("name=\"model\"", b"a\xffb")]),
            Err(ModelNotUtf8),
        ),
        ("empty body", Vec::new(), invalid(0)),
        ("no delimiter", b"just text".to_vec(), invalid(9)),
        (
            "delimiter not at a line start",
            b"x--BND\r\n".to_vec(),
            invalid(8),
        ),
        (
            "truncated in the model",
            model_only()[..60].to_vec(),
            invalid(60),
        ),
        (
            "truncated in headers",
            b"--BND\r\nContent-Disposition: form-data; na".to_vec(),
            invalid(41),
        ),
        (
            "garbage after a delimiter",
            b"--BNDx\r\n".to_vec(),
            invalid(5),
        ),
        (
            "single dash after a delimiter",
            b"--BND-x".to_vec(),
            invalid(6),
        ),
        ("bare LF after a delimiter", b"--BND\n".to_vec(), invalid(5)),
        (
            "bare LF in headers",
            b"--BND\r\nContent-Type: x\n\r\n".to_vec(),
            invalid(22),
        ),
        (
            "two dispositions",
            concat!(
                "--BND\r\nContent-Disposition: form-data; name=\"a\"\r\n",
                "Content-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--BND--"
            )
            .into(),
            invalid(49),
        ),
        (
            "two names",
            form(&[part("name=\"a\"; name=\"model\"", b"m")]),
            invalid(7),
        ),
        (
            "broken parameters",
            form(&[part("name \"model\"", b"m")]),
            invalid(7),
        ),
        (
            "long disposition",
            long_disposition.into_bytes(),
            invalid(7),
        ),
    ];
    for (name, body, expected) in cases {
        let outcome = std::panic::catch_unwind(|| run_all_splits(b"BND", &body))
            .unwrap_or_else(|_| panic!("case {name:?} panicked"));
        assert_eq!(
            outcome.0.as_deref().map_err(Clone::clone),
            expected,
            "case {name:?}"
        );
    }
}

#[test]
fn model_span_covers_the_raw_value() {
    let body = form(&[
        part("name=\"file\"; filename=\"x\"", b"\x00\x01"),
        part("name=\"model\"", b"whisper-1"),
    ]);
    let (result, span) = run_all_splits(b"BND", &body);
    assert_eq!(result.as_deref(), Ok("whisper-1"));
    let span = span.expect("span once found");
    assert_eq!(&body[span.clone()], b"whisper-1");
    // Splicing another name keeps the body valid.
    let mut spliced = body[..span.start].to_vec();
    spliced.extend_from_slice(b"large-v3");
    spliced.extend_from_slice(&body[span.end..]);
    assert_eq!(run(b"BND", &spliced, &[]).0.as_deref(), Ok("large-v3"));
}

#[test]
fn found_is_reported_at_the_delimiter_after_the_value() {
    let mut scanner = MultipartModelScanner::new(b"BND");
    let head = b"--BND\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper";
    assert_eq!(scanner.feed(head), Ok(ScanStatus::NeedMore));
    // `\r\n--BN` may still be content.
    assert_eq!(scanner.feed(b"-1\r\n--BN"), Ok(ScanStatus::NeedMore));
    assert_eq!(scanner.feed(b"D"), Ok(ScanStatus::Found));
    assert_eq!(scanner.model(), Some("whisper-1"));
    assert_eq!(
        scanner.feed(b"\r\nContent-Disposition: form-data; name=\"model\"\r\n"),
        Err(ScanError::DuplicateModel)
    );
    assert_eq!(scanner.finish(), Err(ScanError::DuplicateModel));
}

#[test]
fn invalid_boundaries_are_reported_at_offset_zero() {
    for bad in [
        &b""[..],
        b"a\r\nb",
        &[b'x'; MAX_BOUNDARY_BYTES + 1],
        b"trailing ",
    ] {
        let mut scanner = MultipartModelScanner::new(bad);
        assert_eq!(
            scanner.feed(b"--x\r\n"),
            Err(ScanError::InvalidMultipart { offset: 0 })
        );
        assert_eq!(
            scanner.finish(),
            Err(ScanError::InvalidMultipart { offset: 0 })
        );
    }
}

#[test]
fn large_file_parts_stream_through_without_buffering() {
    // 8 MiB of file bytes full of near-delimiters, fed in 64 KiB chunks.
    let mut file = Vec::with_capacity(8 << 20);
    while file.len() < 8 << 20 {
        file.extend_from_slice(b"\r\n--BN\r\r\n-\x00\xff audio bytes \r\n--BNX");
    }
    let body = form(&[
        part("name=\"file\"; filename=\"a.wav\"", &file),
        part("name=\"model\"", b"m"),
    ]);
    let mut scanner = MultipartModelScanner::new(b"BND");
    let mut most = 0;
    for chunk in body.chunks(64 << 10) {
        scanner.feed(chunk).expect("valid body");
        most = most.max(scanner.retained_bytes());
    }
    assert_eq!(scanner.finish(), Ok("m"));
    assert!(most <= 1024, "scanner held {most} bytes");
}

// ---------------------------------------------------------------------------------------------
// Property tests.

fn arb_boundary() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"BND".to_vec()),
        Just(b"-".to_vec()),
        "[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]".prop_map(String::into_bytes),
    ]
}

/// Bytes shaped like a multipart body for boundary `BND`: raw noise, or a soup of tokens.
fn arb_soup() -> impl Strategy<Value = Vec<u8>> {
    const TOKENS: &[&[u8]] = &[
        b"--BND",
        b"\r\n--BND",
        b"\r\n--BN",
        b"--BND--",
        b"\r\n",
        b"\r",
        b"\n",
        b"-",
        b" ",
        b"Content-Disposition: form-data; name=\"model\"",
        b"Content-Disposition: form-data; name=model; name=x",
        b"content-disposition:form-data;name=\"file\";filename=\"a\\\"",
        b"Content-Type: text/plain",
        b"whisper-1",
        b"\xff",
        b"\x00",
        b"m",
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(prop::sample::select(TOKENS), 0..40)
            .prop_map(|tokens| tokens.concat()),
    ]
}

/// A valid body with boundary `boundary`: text fields, one file part of random bytes, and the
/// model field at position `at`. Returns the body and the model value.
fn build_form(
    boundary: &[u8],
    fields: &[(String, Vec<u8>)],
    file: &[u8],
    model: &str,
    at: Index,
) -> Vec<u8> {
    let mut parts: Vec<(String, Vec<u8>)> = fields.to_vec();
    parts.push(("file\"; filename=\"speech.wav".to_owned(), file.to_vec()));
    parts.insert(
        at.index(parts.len() + 1),
        ("model".to_owned(), model.as_bytes().to_vec()),
    );
    let mut body = b"preamble\r\n".to_vec();
    for (name, content) in &parts {
        body.extend_from_slice(b"\r\n--");
        body.extend_from_slice(boundary);
        body.extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(content);
    }
    body.extend_from_slice(b"\r\n--");
    body.extend_from_slice(boundary);
    body.extend_from_slice(b"--\r\nepilogue");
    body
}

/// Random bytes salted with pieces of the delimiter, to stress the chunk-edge matching.
fn arb_file() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..64),
            1 => prop::sample::select(vec![
                b"\r\n--".to_vec(),
                b"\r\n-".to_vec(),
                b"\r".to_vec(),
                b"\r\r\n--".to_vec(),
                b"--".to_vec(),
            ]),
        ],
        0..24,
    )
    .prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn random_bytes_never_panic_and_ignore_chunking(
        boundary in prop_oneof![3 => Just(b"BND".to_vec()), 1 => arb_boundary()],
        body in arb_soup(),
        picks in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let whole = run(&boundary, &body, &[]);
        prop_assert_eq!(&run(&boundary, &body, &cut_points(body.len(), &picks)), &whole);
        let bytewise: Vec<usize> = (1..body.len()).collect();
        prop_assert_eq!(&run(&boundary, &body, &bytewise), &whole);
    }

    #[test]
    fn generated_forms_yield_their_model(
        boundary in arb_boundary(),
        fields in prop::collection::vec(
            ("[a-z_]{1,12}", prop::collection::vec(any::<u8>(), 0..40)),
            0..4,
        ),
        file in arb_file(),
        model in "[a-zA-Z0-9./:_-]{0,40}|\\PC{0,20}|[a-z\r\n -]{0,20}",
        at in any::<Index>(),
        picks in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let fields: Vec<(String, Vec<u8>)> =
            fields.into_iter().filter(|(name, _)| name != "model").collect();
        let body = build_form(&boundary, &fields, &file, &model, at);
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(&boundary);
        // Contents must not hold the delimiter (a real client picks a boundary that way).
        let contents = fields
            .iter()
            .map(|(_, content)| content.as_slice())
            .chain([file.as_slice(), model.as_bytes()]);
        for content in contents {
            let mut framed = b"\r\n".to_vec();
            framed.extend_from_slice(content);
            framed.extend_from_slice(b"\r\n");
            prop_assume!(!framed.windows(delimiter.len()).any(|w| w == delimiter.as_slice()));
        }
        let whole = run(&boundary, &body, &[]);
        prop_assert_eq!(whole.0.as_deref(), Ok(model.as_str()));
        prop_assert_eq!(&run(&boundary, &body, &cut_points(body.len(), &picks)), &whole);
        let bytewise: Vec<usize> = (1..body.len()).collect();
        prop_assert_eq!(&run(&boundary, &body, &bytewise), &whole);
    }
}
