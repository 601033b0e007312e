//! The PTX inside an nvcc fatbin.
//!
//! A fatbin is a 16-byte header (magic 0xBA55ED50, version, header size, size of what follows)
//! and a list of entries, each a header and a payload: kind 1 is PTX text, kind 2 an ELF cubin
//! (SASS, which the interpreter cannot run). A PTX payload whose flags carry 0x8000 is a zstd
//! frame (nvcc 13 compresses by default; `--no-compress` gives plain text).

const MAGIC: u32 = 0xBA55_ED50;
const KIND_PTX: u16 = 1;
const FLAG_ZSTD: u64 = 0x8000;
const FLAG_LZ4: u64 = 0x2000;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Whether `image` starts like a fatbin.
pub fn is_fatbin(image: &[u8]) -> bool {
    u32_at(image, 0) == Some(MAGIC)
}

/// The fatbin's total size from its header (for images given by pointer only).
pub fn size_from_header(header: &[u8]) -> Option<usize> {
    let header_size = u16_at(header, 6)? as usize;
    Some(header_size + u64_at(header, 8)? as usize)
}

/// The PTX texts of the fatbin, one per PTX entry (usually one, for the highest arch).
pub fn ptx_texts(image: &[u8]) -> Result<Vec<String>, String> {
    if !is_fatbin(image) {
        return Err("not a fatbin (bad magic)".into());
    }
    let header_size = u16_at(image, 6).ok_or("truncated fatbin header")? as usize;
    let body = u64_at(image, 8).ok_or("truncated fatbin header")? as usize;
    let end = header_size + body;
    if end > image.len() {
        return Err(format!(
            "fatbin says {end} bytes, image has {}",
            image.len()
        ));
    }
    let mut texts = Vec::new();
    let mut at = header_size;
    while at + 16 <= end {
        let kind = u16_at(image, at).ok_or("truncated entry")?;
        let entry_header = u32_at(image, at + 4).ok_or("truncated entry")? as usize;
        let padded = u64_at(image, at + 8).ok_or("truncated entry")? as usize;
        let payload_start = at + entry_header;
        let payload_end = payload_start + padded;
        if payload_end > end {
            return Err("fatbin entry runs past the image".into());
        }
        if kind == KIND_PTX {
            let flags = u64_at(image, at + 40).ok_or("truncated entry")?;
            // The stored (compressed) size, or 0 when the payload is stored as is.
            let stored = match u32_at(image, at + 16).unwrap_or(0) as usize {
                0 => padded,
                s => s.min(padded),
            };
            let payload = &image[payload_start..payload_start + stored];
            let bytes = if flags & FLAG_ZSTD != 0 {
                let mut out = Vec::new();
                let mut decoder = ruzstd::decoding::StreamingDecoder::new(payload)
                    .map_err(|e| format!("zstd: {e}"))?;
                std::io::Read::read_to_end(&mut decoder, &mut out)
                    .map_err(|e| format!("zstd: {e}"))?;
                out
            } else if flags & FLAG_LZ4 != 0 {
                return Err(
                    "LZ4-compressed PTX is not supported (rebuild with nvcc 13 or --no-compress)"
                        .into(),
                );
            } else {
                image[payload_start..payload_end].to_vec()
            };
            let text = String::from_utf8_lossy(&bytes);
            texts.push(text.trim_end_matches('\0').to_string());
        }
        at = payload_end;
    }
    Ok(texts)
}
