"""Drawing the Synthetic images: one coloured shape, rotated and scaled, on a cluttered noisy background.

Two styles: ``draw_shape`` (the Synthetic dataset, under a tinted light, and the tiny
CLIP's pre-training, under neutral light) and ``draw_sketch`` (the SyntheticSketch
dataset: ruled paper, pencil scribbles, inked outlines, a warm lamp), which no
config was tuned on.

Shared by the Synthetic dataset (vl_datasets/synthetic.py, which writes a
fixed set of these to disk) and the tiny CLIP's pre-training
(llamp/tiny/pretraining.py, which draws fresh ones from another random
stream), so both see the same distribution and neither needs the other.

Classes are colour x shape pairs (6 x 6 = 36); the shapes were chosen so that
a two-layer ViT learns to tell them apart, at least partly, in a minute or two
of CPU. The first half (base) are the pairs whose colour and shape indices have
an even sum, the second half (new)
those with an odd sum: each half holds every colour with three shapes and every
shape with three colours, so a new class is an unseen combination of seen
attributes.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40), "orange": (235, 135, 30), "yellow": (225, 210, 45),
    "green": (40, 160, 60), "blue": (45, 85, 215), "purple": (140, 55, 185),
}
SHAPES = ("circle", "ring", "triangle", "cross", "bar", "dots")

# Base (even index sum) first, then new; within each half ordered by colour, then shape.
CLASSES: tuple[tuple[str, str], ...] = tuple(
    (colour, shape)
    for parity in (0, 1)
    for ci, colour in enumerate(COLOURS)
    for si, shape in enumerate(SHAPES)
    if (ci + si) % 2 == parity
)
CLASSNAMES: tuple[str, ...] = tuple(f"{c} {s}" for c, s in CLASSES)

IMAGE_SIZE = 64
# The dataset is a downstream domain: its drawings are seen under a tinted light, every hue turned
# by this many degrees (red towards orange, blue towards purple, ...). Pre-training draws them under
# neutral light, as CLIP's web images differ from a benchmark's, so zero-shot CLIP misreads some
# colours while its image features still tell every class apart: the room that prompt learning fills.
DATASET_HUE_SHIFT_DEGREES = 25.0
MIN_RADIUS, MAX_RADIUS = 12, 23  # half extent of the shape, in pixels
JPEG_QUALITY = 90  # the dataset is stored as JPEG, like the real benchmarks (and a few MB in all)


def size_word(radius: int) -> str | None:
    """How a caption may call a shape of this radius: "small", "large", or nothing in between."""
    if radius <= 15:
        return "small"
    if radius >= 20:
        return "large"
    return None


def _polygon(shape: str) -> list[tuple[float, float]]:
    """The outline of a filled polygon shape in unit coordinates (radius 1, centred at 0)."""
    if shape == "bar":
        return [(-1, -0.22), (1, -0.22), (1, 0.22), (-1, 0.22)]
    if shape == "triangle":
        return [(math.cos(a), math.sin(a)) for a in (math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    if shape == "cross":
        t = 0.32  # half thickness of the arms
        return [(t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t), (-1, t), (-1, -t),
                (-t, -t), (-t, -1)]
    raise ValueError(f"no polygon for shape {shape!r}")


def _dull_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A grey with a slight tint: clutter and background never look like a class colour."""
    grey = int(rng.integers(40, 215))
    return tuple(int(v) for v in np.clip(grey + rng.integers(-18, 19, size=3), 0, 255))


def _hue_rotation(degrees: float) -> np.ndarray:
    """The RGB matrix that turns every hue by ``degrees`` (a rotation about the grey axis)."""
    a = math.radians(degrees)
    c, s, third, root = math.cos(a), math.sin(a), 1.0 / 3.0, math.sqrt(1.0 / 3.0)
    return np.array([[c + (1 - c) * third, third * (1 - c) - root * s, third * (1 - c) + root * s],
                     [third * (1 - c) + root * s, c + third * (1 - c), third * (1 - c) - root * s],
                     [third * (1 - c) - root * s, third * (1 - c) + root * s, c + third * (1 - c)]])


def _draw_figure(rng: np.random.Generator, draw: ImageDraw.ImageDraw, shape: str, fill) -> int:
    """Draw ``shape`` at a random size, position and rotation with ``fill``; return its radius in pixels."""
    r = int(rng.integers(MIN_RADIUS, MAX_RADIUS + 1))
    cx, cy = (float(v) for v in rng.integers(r + 1, IMAGE_SIZE - r - 1, size=2))
    angle = rng.uniform(0, 2 * math.pi)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, round(0.3 * r)))
    elif shape == "dots":  # three small discs at the corners of a rotated triangle
        d = 0.33 * r
        for k in range(3):
            turn = angle + k * 2 * math.pi / 3
            x, y = cx + 0.67 * r * math.cos(turn), cy + 0.67 * r * math.sin(turn)
            draw.ellipse((x - d, y - d, x + d, y + d), fill=fill)
    else:
        cos, sin = math.cos(angle), math.sin(angle)
        points = [(cx + r * (x * cos - y * sin), cy + r * (x * sin + y * cos)) for x, y in _polygon(shape)]
        draw.polygon(points, fill=fill)
    return r


def draw_shape(rng: np.random.Generator, colour: str, shape: str,
               hue_shift_degrees: float = 0.0) -> tuple[Image.Image, int]:
    """One RGB image of ``colour shape`` and the shape's radius in pixels.

    Random: background tint, 3-6 dull clutter strokes and dots behind the shape,
    the shape's size, position and rotation, its colour (jittered around the
    named one), and pixel noise. Then every hue is turned by ``hue_shift_degrees``.
    Deterministic given ``rng``'s state.
    """
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), _dull_colour(rng))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, IMAGE_SIZE, size=4))
        if rng.random() < 0.5:
            draw.line((x0, y0, x1, y1), fill=_dull_colour(rng), width=int(rng.integers(1, 3)))
        else:
            d = int(rng.integers(2, 6))
            draw.ellipse((x0, y0, x0 + d, y0 + d), fill=_dull_colour(rng))

    brightness = rng.uniform(0.8, 1.12)
    fill = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) * brightness + rng.integers(-20, 21, size=3),
                                         0, 255))
    r = _draw_figure(rng, draw, shape, fill)

    noise = rng.normal(0.0, 8.0, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    pixels = np.asarray(img, dtype=np.float32) + noise
    if hue_shift_degrees:
        pixels = pixels @ _hue_rotation(hue_shift_degrees).T.astype(np.float32)
    pixels = np.clip(pixels, 0, 255).round().astype(np.uint8)
    return Image.fromarray(pixels), r


# A second drawing style, never used to tune a config: the learning tests run every method on both, so that
# what a method gains does not hang on the drawings its demo config was tuned on. Everything but the classes
# and the shapes' geometry differs from the first style: ruled paper with a gradient instead of a dull tint,
# pencil scribbles instead of strokes and dots, figures outlined in ink, a warm lamp from one side instead of
# a tinted light, softer noise and a slight blur.
SKETCH_LAMP_GAINS = (1.2, 0.95, 0.7)  # the lamp's colour: red up, blue down


def _pale_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(175, 236, size=3).astype(np.float32)


def draw_sketch(rng: np.random.Generator, colour: str, shape: str) -> tuple[Image.Image, int]:
    """One RGB image of ``colour shape`` in the second style, and the shape's radius in pixels.

    Deterministic given ``rng``'s state.
    """
    ramp = np.linspace(0.0, 1.0, IMAGE_SIZE, dtype=np.float32)[:, None, None]  # top to bottom
    paper = _pale_colour(rng) * (1 - ramp) + _pale_colour(rng) * ramp  # [size, 1, 3]
    img = Image.fromarray(np.broadcast_to(paper, (IMAGE_SIZE, IMAGE_SIZE, 3)).round().astype(np.uint8))
    draw = ImageDraw.Draw(img)
    spacing = int(rng.integers(6, 10))
    rule = tuple(int(v) for v in rng.integers((140, 155, 180), (180, 195, 220)))  # blue-grey ruling
    for y in range(int(rng.integers(0, spacing)), IMAGE_SIZE, spacing):
        draw.line((0, y, IMAGE_SIZE, y), fill=rule, width=1)
    for _ in range(int(rng.integers(2, 5))):  # pencil scribbles: short random walks
        x, y = (float(v) for v in rng.uniform(0, IMAGE_SIZE, size=2))
        points = [(x, y)]
        for _ in range(int(rng.integers(4, 9))):
            x, y = x + float(rng.normal(0, 6)), y + float(rng.normal(0, 6))
            points.append((x, y))
        grey = int(rng.integers(60, 121))
        draw.line(points, fill=(grey, grey, grey), width=1)

    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    r = _draw_figure(rng, ImageDraw.Draw(mask), shape, 255)
    inked = mask.filter(ImageFilter.MaxFilter(3))  # the figure grown by a pixel: its ink outline
    ink = int(rng.integers(20, 61))
    fill = np.clip(np.array(COLOURS[colour]) * rng.uniform(0.85, 1.1) + rng.integers(-15, 16, size=3), 0, 255)
    img.paste((ink, ink, ink), mask=inked)
    img.paste(tuple(int(v) for v in fill), mask=mask)
    img = img.filter(ImageFilter.GaussianBlur(0.6))

    angle = rng.uniform(0, 2 * math.pi)  # the lamp's side
    coords = np.linspace(-1.0, 1.0, IMAGE_SIZE, dtype=np.float32)
    towards = math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None]  # [size, size]
    light = (0.95 + 0.2 * towards)[..., None] * np.array(SKETCH_LAMP_GAINS, dtype=np.float32)
    pixels = np.asarray(img, dtype=np.float32) * light + rng.normal(0.0, 4.0, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8)), r


def jpeg_bytes(img: Image.Image) -> bytes:
    """The image as the dataset stores it."""
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def as_stored(img: Image.Image) -> Image.Image:
    """The image after the dataset's JPEG round trip (what a model reads back from disk)."""
    return Image.open(io.BytesIO(jpeg_bytes(img))).convert("RGB")
