//! Shared by the examples: their common flags ([`cli`]), the pipeline of `mnist --augment`
//! ([`augmentation`]), and for those that write pictures, laying out grey images in a grid and
//! saving it as a PNG that appears whole or not at all.
// Each example compiles this module on its own and uses part of it.
#![allow(dead_code)]

pub mod augmentation;
pub mod cli;

use std::error::Error;
use std::io::BufWriter;
use std::path::Path;

use striate::io::AtomicFile;

/// How cell values map to grey levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shading {
    /// `[0, 1]` to black..white, clamped (images).
    Unit,
    /// Each cell stretched from its own minimum (black) to maximum (white) (filters, feature
    /// maps).
    PerCell,
}

/// A grid of `rows × columns` cells of `height × width` values each, every value drawn as a
/// `scale × scale` block, with grey lines between cells.
pub struct Grid {
    pub rows: usize,
    pub columns: usize,
    pub height: usize,
    pub width: usize,
    pub scale: usize,
    pub shading: Shading,
    /// Extra space after the first column (to set originals apart).
    pub first_column_gap: usize,
}

impl Grid {
    /// Renders `cells` (row-major; a missing cell stays background) as 8-bit grey pixels;
    /// returns `(pixels, width, height)`.
    pub fn render(&self, cells: &[&[f32]]) -> (Vec<u8>, usize, usize) {
        let (cell_h, cell_w, gap) = (
            self.height * self.scale,
            self.width * self.scale,
            self.scale.max(1),
        );
        let width = gap + (cell_w + gap) * self.columns + self.first_column_gap;
        let height = gap + (cell_h + gap) * self.rows;
        let mut pixels = vec![96u8; width * height];
        for (index, cell) in cells.iter().enumerate().take(self.rows * self.columns) {
            let (row, column) = (index / self.columns, index % self.columns);
            let extra = if column > 0 { self.first_column_gap } else { 0 };
            let (top, left) = (
                gap + row * (cell_h + gap),
                gap + column * (cell_w + gap) + extra,
            );
            let (low, high) = match self.shading {
                Shading::Unit => (0.0, 1.0),
                Shading::PerCell => cell
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                        (l.min(v), h.max(v))
                    }),
            };
            let span = if high > low { high - low } else { 1.0 };
            for y in 0..cell_h {
                for x in 0..cell_w {
                    let v = cell[(y / self.scale) * self.width + x / self.scale];
                    pixels[(top + y) * width + left + x] =
                        (((v - low) / span).clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
        (pixels, width, height)
    }
}

/// Writes 8-bit grey `pixels` as a PNG through striate's atomic writer, so an interrupted
/// run leaves neither a truncated image nor a temporary file.
pub fn write_png(
    path: &Path,
    pixels: &[u8],
    width: usize,
    height: usize,
) -> Result<(), Box<dyn Error>> {
    let mut file = BufWriter::new(AtomicFile::create(path)?);
    {
        let mut encoder = png::Encoder::new(&mut file, width as u32, height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(pixels)?;
        writer.finish()?;
    }
    file.into_inner().map_err(|e| e.into_error())?.commit()?;
    Ok(())
}
