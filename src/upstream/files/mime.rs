//! `Content-Type` from a file name's extension: the types a web site
//! serves, text ones with `charset=utf-8`; anything else is
//! `application/octet-stream`, as nginx's `default_type` in its stock
//! config.

/// The type for `name` (a file name or path; only its extension counts,
/// compared case-insensitively).
pub fn content_type(name: &str) -> &'static str {
    let file = name.rsplit('/').next().unwrap_or(name);
    let Some((_, ext)) = file.rsplit_once('.') else { return DEFAULT };
    // Longest extension in the table is 11 bytes; anything longer is unknown.
    if ext.is_empty() || ext.len() > 16 {
        return DEFAULT;
    }
    let mut lower = [0u8; 16];
    for (d, s) in lower.iter_mut().zip(ext.bytes()) {
        *d = s.to_ascii_lowercase();
    }
    let ext = &lower[..ext.len()];
    TYPES.iter().find(|(e, _)| e.as_bytes() == ext).map_or(DEFAULT, |(_, t)| t)
}

const DEFAULT: &str = "application/octet-stream";

const TYPES: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("cjs", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("map", "application/json"),
    ("webmanifest", "application/manifest+json"),
    ("xml", "application/xml"),
    ("xhtml", "application/xhtml+xml"),
    ("rss", "application/rss+xml"),
    ("atom", "application/atom+xml"),
    ("txt", "text/plain; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    ("wasm", "application/wasm"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("ico", "image/x-icon"),
    ("bmp", "image/bmp"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
    ("eot", "application/vnd.ms-fontobject"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("br", "application/octet-stream"),
    ("zst", "application/zstd"),
    ("tar", "application/x-tar"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("ogv", "video/ogg"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("wav", "audio/wav"),
    ("m4a", "audio/mp4"),
    ("flac", "audio/flac"),
    ("vtt", "text/vtt; charset=utf-8"),
    ("ics", "text/calendar; charset=utf-8"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_extension() {
        assert_eq!(content_type("/index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("/assets/app.3f2a.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("/img/logo.svg"), "image/svg+xml");
        assert_eq!(content_type("/font.woff2"), "font/woff2");
        assert_eq!(content_type("/README"), DEFAULT);
        assert_eq!(content_type("/dir.d/README"), DEFAULT);
        assert_eq!(content_type("/x.averyveryverylongextension"), DEFAULT);
        assert_eq!(content_type("/trailing."), DEFAULT);
    }
}
