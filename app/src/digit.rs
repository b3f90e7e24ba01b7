//! Turns a drawing into an MNIST-like digit: the ink's bounding box is scaled to fit a 20×20
//! box (keeping its aspect ratio, box-filtered) and the result is placed in a 28×28 image so
//! that its centre of mass sits at the centre, as in LeCun et al.'s preprocessing of MNIST.

use crate::protocol::SIDE;

/// Side of the box the digit is scaled into.
const BOX: usize = 20;
/// Ink values at or below this are background (anti-aliasing fringe).
const THRESHOLD: u8 = 8;

/// Converts `ink` (one value per pixel, row-major, `width × height`, 0 = background) into
/// [`SIDE`]² grey values. Returns `None` when there is no ink (or the sizes disagree).
pub fn to_mnist(ink: &[u8], width: usize, height: usize) -> Option<Vec<u8>> {
    if width == 0 || height == 0 || ink.len() != width * height {
        return None;
    }
    let (x0, y0, x1, y1) = bounding_box(ink, width, height)?;
    let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
    let scale = BOX as f32 / bw.max(bh) as f32;
    let tw = ((bw as f32 * scale).round() as usize).clamp(1, BOX);
    let th = ((bh as f32 * scale).round() as usize).clamp(1, BOX);

    // Box-filter the bounding box down to tw × th.
    let mut small = vec![0f32; tw * th];
    for ty in 0..th {
        let (sy0, sy1) = span(y0, bh, ty, th);
        for tx in 0..tw {
            let (sx0, sx1) = span(x0, bw, tx, tw);
            let mut sum = 0u32;
            for y in sy0..sy1 {
                sum += ink[y * width + sx0..y * width + sx1]
                    .iter()
                    .map(|&v| v as u32)
                    .sum::<u32>();
            }
            small[ty * tw + tx] = sum as f32 / ((sy1 - sy0) * (sx1 - sx0)) as f32;
        }
    }

    // Centre of mass of the small image, in pixel-centre coordinates.
    let (mut mass, mut mx, mut my) = (0f32, 0f32, 0f32);
    for (i, &v) in small.iter().enumerate() {
        mass += v;
        mx += v * ((i % tw) as f32 + 0.5);
        my += v * ((i / tw) as f32 + 0.5);
    }
    if mass <= 0.0 {
        return None;
    }
    let half = SIDE as f32 / 2.0;
    // Top-left corner that puts the centre of mass at the image centre, kept inside the image.
    let place = |com: f32, extent: usize| -> usize {
        let ideal = (half - com / mass).round();
        ideal.clamp(0.0, (SIDE - extent) as f32) as usize
    };
    let (ox, oy) = (place(mx, tw), place(my, th));

    let mut out = vec![0u8; SIDE * SIDE];
    for ty in 0..th {
        for tx in 0..tw {
            out[(oy + ty) * SIDE + ox + tx] = small[ty * tw + tx].round().clamp(0.0, 255.0) as u8;
        }
    }
    Some(out)
}

/// Inclusive bounding box `(x0, y0, x1, y1)` of the pixels above [`THRESHOLD`].
fn bounding_box(ink: &[u8], width: usize, height: usize) -> Option<(usize, usize, usize, usize)> {
    let mut bb: Option<(usize, usize, usize, usize)> = None;
    for y in 0..height {
        for (x, &v) in ink[y * width..(y + 1) * width].iter().enumerate() {
            if v > THRESHOLD {
                bb = Some(match bb {
                    None => (x, y, x, y),
                    Some((a, b, c, d)) => (a.min(x), b.min(y), c.max(x), d.max(y)),
                });
            }
        }
    }
    bb
}

/// Source pixel range `[start, end)` (never empty) covered by target pixel `t` of `targets`
/// when `len` source pixels starting at `origin` are shrunk or stretched onto `targets`.
fn span(origin: usize, len: usize, t: usize, targets: usize) -> (usize, usize) {
    let start = t * len / targets;
    let end = ((t + 1) * len).div_ceil(targets).max(start + 1).min(len);
    (origin + start.min(len - 1), origin + end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canvas(w: usize, h: usize, rect: (usize, usize, usize, usize)) -> Vec<u8> {
        let mut v = vec![0u8; w * h];
        for y in rect.1..rect.3 {
            for x in rect.0..rect.2 {
                v[y * w + x] = 255;
            }
        }
        v
    }

    fn com(img: &[u8]) -> (f32, f32) {
        let (mut m, mut x, mut y) = (0f32, 0f32, 0f32);
        for (i, &v) in img.iter().enumerate() {
            m += v as f32;
            x += v as f32 * ((i % SIDE) as f32 + 0.5);
            y += v as f32 * ((i / SIDE) as f32 + 0.5);
        }
        (x / m, y / m)
    }

    #[test]
    fn empty_and_malformed_give_none() {
        assert_eq!(to_mnist(&[0; 100], 10, 10), None);
        assert_eq!(to_mnist(&[5; 100], 10, 10), None);
        assert_eq!(to_mnist(&[255; 99], 10, 10), None);
        assert_eq!(to_mnist(&[], 0, 0), None);
    }

    #[test]
    fn a_tall_bar_in_a_corner_is_scaled_to_20_rows_and_centred() {
        // 40×200 bar in the top-left corner of a 280×280 canvas.
        let img = to_mnist(&canvas(280, 280, (0, 0, 40, 200)), 280, 280).unwrap();
        assert_eq!(img.len(), PIXELS_TEST);
        let rows: Vec<usize> = (0..SIDE)
            .filter(|&y| img[y * SIDE..(y + 1) * SIDE].iter().any(|&v| v > 0))
            .collect();
        assert_eq!(rows.len(), 20);
        let cols = (0..SIDE)
            .filter(|&x| (0..SIDE).any(|y| img[y * SIDE + x] > 0))
            .count();
        assert_eq!(cols, 4);
        let (cx, cy) = com(&img);
        assert!(
            (cx - 14.0).abs() <= 0.5 && (cy - 14.0).abs() <= 0.5,
            "centre of mass {cx}, {cy}"
        );
        assert_eq!(*img.iter().max().unwrap(), 255);
    }

    #[test]
    fn a_single_dot_is_stretched_not_lost() {
        let img = to_mnist(&canvas(280, 280, (270, 270, 272, 273)), 280, 280).unwrap();
        assert!(img.iter().filter(|&&v| v > 0).count() > 100);
        let (cx, cy) = com(&img);
        assert!((cx - 14.0).abs() <= 0.5 && (cy - 14.0).abs() <= 0.5);
    }

    const PIXELS_TEST: usize = crate::protocol::PIXELS;
}
