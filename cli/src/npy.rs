//! Minimal `.npy` (format 1.0/2.0) reading and writing for little-endian `f32` C-order arrays.

use anyhow::{Context, Result, bail};

/// Parses an `.npy` file holding `<f4` data in C order; returns (shape, values).
pub fn read(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("not a .npy file (missing \\x93NUMPY magic)");
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                bail!("truncated .npy header");
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail!("unsupported .npy version {v}"),
    };
    let header = bytes
        .get(start..start + hlen)
        .context("truncated .npy header")?;
    let header = std::str::from_utf8(header).context(".npy header is not text")?;
    let field = |key: &str| -> Result<&str> {
        let at = header
            .find(&format!("'{key}'"))
            .with_context(|| format!(".npy header lacks '{key}'"))?;
        Ok(header[at + key.len() + 2..]
            .trim_start()
            .trim_start_matches(':')
            .trim_start())
    };
    let descr = field("descr")?;
    if !descr.starts_with("'<f4'") {
        bail!(
            "only little-endian float32 ('<f4') arrays are supported, found {}",
            &descr[..descr.find(',').unwrap_or(descr.len())]
        );
    }
    if field("fortran_order")?.starts_with("True") {
        bail!("Fortran-order arrays are not supported; save with np.ascontiguousarray");
    }
    let shape_txt = field("shape")?;
    let open = shape_txt.find('(').context("bad shape in .npy header")?;
    let close = shape_txt.find(')').context("bad shape in .npy header")?;
    let shape: Vec<usize> = shape_txt[open + 1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().with_context(|| format!("bad dim `{s}`")))
        .collect::<Result<_>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .context("shape overflows")?;
    let data = &bytes[start + hlen..];
    if data.len() != n * 4 {
        bail!(
            "shape {shape:?} needs {} bytes of data, file has {}",
            n * 4,
            data.len()
        );
    }
    Ok((shape, from_le(data)))
}

/// Decodes raw little-endian f32 bytes.
pub fn from_le(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Encodes an `.npy` 1.0 file.
pub fn write(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims = match shape.len() {
        1 => format!("{},", shape[0]),
        _ => shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_errors() {
        let b = write(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        assert_eq!((b.len() - 24) % 64, 0, "header padded to 64 bytes");
        let (s, v) = read(&b).unwrap();
        assert_eq!(s, vec![2, 3]);
        assert_eq!(v[5], 6.5);
        let (s, _) = read(&write(&[4], &[0.0; 4])).unwrap();
        assert_eq!(s, vec![4]);
        assert!(read(&b[..b.len() - 1]).is_err());
        assert!(read(b"hello world").is_err());
        let mut f8 = b.clone();
        let at = f8.windows(3).position(|w| w == b"<f4").unwrap();
        f8[at + 2] = b'8';
        let err = read(&f8).unwrap_err().to_string();
        assert!(err.contains("float32"), "{err}");
    }
}
