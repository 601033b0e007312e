//! PNG plots with plotters' bitmap backend. Text uses DejaVu Sans embedded by the `dejavu` crate,
//! so no system fonts are needed.
//! - `loss.png`: training loss per method (a 10-step moving average), held-out loss as dots.
//! - `kept_fraction.png`: per masked method, the fraction of each layer's entries updated per step.
//! - `mask_stability.png`: per masked method, each layer's mask stability per step.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

pub const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub fn fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

fn series(lines: &[serde_json::Value], kind: &str, key: &str) -> Vec<(f64, f64)> {
    lines
        .iter()
        .filter(|v| v["kind"] == kind)
        .filter_map(|v| Some((v["step"].as_f64()?, v[key].as_f64()?)))
        .collect()
}

fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    (0..points.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(window);
            let slice = &points[from..=i];
            (
                points[i].0,
                slice.iter().map(|p| p.1).sum::<f64>() / slice.len() as f64,
            )
        })
        .collect()
}

pub fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// `runs` holds (method, its metrics lines).
/// A chart of both plots: f64 axes on a bitmap.
pub type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The legend's sample of a line of `color`.
pub fn legend_mark(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
}

/// Draws the chart's legend (boxed, semi-transparent).
pub fn draw_legend<'a>(chart: &mut Chart<'a, 'a>) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

pub fn loss_plot(path: &Path, runs: &[(String, Vec<serde_json::Value>)]) -> Result<()> {
    fonts();
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let curves: Vec<_> = runs
        .iter()
        .map(|(m, lines)| {
            (
                m,
                moving_average(&series(lines, "train", "loss"), 10),
                series(lines, "eval", "heldout_loss"),
            )
        })
        .collect();
    let all = curves
        .iter()
        .flat_map(|(_, train, eval)| train.iter().chain(eval));
    let (x_max, y_max) = all.fold((1.0f64, 0.1f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "training loss (10-step average; dots: held-out)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.05)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()
        .map_err(err)?;
    for (i, (method, train, eval)) in curves.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(train, color.stroke_width(2)))
            .map_err(err)?
            .label(method.as_str())
            .legend(legend_mark(color));
        chart
            .draw_series(eval.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(err)?;
    }
    draw_legend(&mut chart)?;
    root.present().map_err(err)
}

/// One panel per method whose kept fraction is not 1 everywhere.
pub fn kept_plot(path: &Path, runs: &[(String, Vec<serde_json::Value>)]) -> Result<()> {
    layer_plot(
        path,
        runs,
        "kept_by_layer",
        "fraction of each layer's entries updated",
        "kept",
    )
}

/// One panel per run with mask stability: per layer, the fraction of the entries kept at a step
/// that were also kept at the step before.
pub fn stability_plot(path: &Path, runs: &[(String, Vec<serde_json::Value>)]) -> Result<()> {
    layer_plot(
        path,
        runs,
        "stability_by_layer",
        "mask stability per layer (kept at t and t-1 / kept at t)",
        "stability",
    )
}

/// One panel per run whose per-layer series `key` exists and is not 1 everywhere; one line per
/// layer against the step.
fn layer_plot(
    path: &Path,
    runs: &[(String, Vec<serde_json::Value>)],
    key: &str,
    caption: &str,
    y_desc: &str,
) -> Result<()> {
    fonts();
    type Layers = Vec<Vec<(f64, f64)>>;
    let panels: Vec<(&String, Layers)> = runs
        .iter()
        .filter_map(|(method, lines)| {
            let rows: Vec<(f64, Vec<f64>)> = lines
                .iter()
                .filter(|v| v["kind"] == "train")
                .filter_map(|v| {
                    Some((
                        v["step"].as_f64()?,
                        v[key]
                            .as_array()?
                            .iter()
                            .map(|x| x.as_f64())
                            .collect::<Option<Vec<f64>>>()?,
                    ))
                })
                .collect();
            let layers = rows.first()?.1.len();
            if rows.iter().all(|(_, k)| k.iter().all(|&x| x >= 1.0)) {
                return None;
            }
            Some((
                method,
                (0..layers)
                    .map(|l| rows.iter().map(|(s, k)| (*s, k[l])).collect())
                    .collect(),
            ))
        })
        .collect();
    let root =
        BitMapBackend::new(path, (900, 300 * panels.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    for (area, (method, layers)) in root
        .split_evenly((panels.len().max(1), 1))
        .iter()
        .zip(&panels)
    {
        let x_max = layers.iter().flatten().map(|p| p.0).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{method}: {caption}"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..x_max, 0.0..1.05)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for (l, points) in layers.iter().enumerate() {
            let color = COLORS[l % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(format!("layer {l}"))
                .legend(legend_mark(color));
        }
        draw_legend(&mut chart)?;
    }
    root.present().map_err(err)
}
