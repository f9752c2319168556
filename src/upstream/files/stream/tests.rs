use super::*;
use http_body_util::BodyExt;
use std::io::Write;

#[tokio::test]
async fn a_file_comes_out_whole_in_chunk_sized_frames() {
    let mut f = tempfile::tempfile().unwrap();
    let data: Vec<u8> = (0..(CHUNK * 2 + 100)).map(|i| (i % 251) as u8).collect();
    f.write_all(&data).unwrap();
    use std::io::Seek;
    f.seek(io::SeekFrom::Start(0)).unwrap();
    let mut body = FileBody::new(std::sync::Arc::new(f), 0, data.len() as u64);
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        let d = frame.unwrap().into_data().unwrap();
        sizes.push(d.len());
        got.extend_from_slice(&d);
    }
    assert_eq!(sizes, vec![CHUNK, CHUNK, 100]);
    assert_eq!(got, data);
}

#[tokio::test]
async fn a_file_shorter_than_announced_ends_with_an_error() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"short").unwrap();
    use std::io::Seek;
    f.seek(io::SeekFrom::Start(0)).unwrap();
    let mut body = FileBody::new(std::sync::Arc::new(f), 0, 10);
    assert!(body.frame().await.unwrap().is_err());
    assert!(body.is_end_stream());
}
