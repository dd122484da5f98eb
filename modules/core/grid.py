"""Image grids and their legends, laid out as A1111's ``image_grid`` / ``draw_grid_annotations`` do.

Pure PIL. The legend uses Pillow's bundled font (``ImageFont.load_default(size=...)``), so no font
file is needed; its metrics differ slightly from A1111's DejaVu Sans, the layout rules do not.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from PIL import Image, ImageColor, ImageDraw, ImageFont

TEXT_ACTIVE = "#000000"
TEXT_INACTIVE = "#999999"
BACKGROUND = "#ffffff"
STRIKE_WIDTH = 4


def grid_rows(count: int, batch_size: int = 1, rows: int | None = None, n_rows: int = -1,
              prevent_empty_spots: bool = False) -> int:
    """The number of rows A1111 picks for ``count`` images (``n_rows`` is the "Grid row count" setting)."""
    if rows is None:
        if n_rows > 0:
            rows = n_rows
        elif n_rows == 0:
            rows = batch_size
        elif prevent_empty_spots:
            rows = math.floor(math.sqrt(count))
            while count % rows:
                rows -= 1
        else:
            rows = round(math.sqrt(count))
    return max(1, min(rows, count))


def image_grid(images: list[Image.Image], batch_size: int = 1, rows: int | None = None, n_rows: int = -1,
               prevent_empty_spots: bool = False, background: str = BACKGROUND) -> Image.Image:
    """Paste ``images`` row by row into cells of the largest width and height; smaller ones are centred."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    rows = grid_rows(len(images), batch_size, rows, n_rows, prevent_empty_spots)
    cols = math.ceil(len(images) / rows)
    cell_w = max(image.width for image in images)
    cell_h = max(image.height for image in images)
    grid = Image.new("RGB", (cols * cell_w, rows * cell_h), ImageColor.getcolor(background, "RGB"))
    for i, image in enumerate(images):
        x = (i % cols) * cell_w + (cell_w - image.width) // 2
        y = (i // cols) * cell_h + (cell_h - image.height) // 2
        grid.paste(image, (x, y))
    return grid


@dataclass
class GridAnnotation:
    """One legend text; an inactive one (a prompt-matrix part that is off) is grey and struck through."""

    text: str = ""
    is_active: bool = True
    size: tuple[int, int] = field(default=(0, 0), compare=False)
    allowed_width: int = field(default=0, compare=False)


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(1, size))


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, max_width: float) -> list[str]:
    """Greedy word wrap; a word longer than the width gets a line of its own (shrunk when drawn)."""
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if draw.textlength(candidate, font=font) <= max_width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _layout(draw: ImageDraw.ImageDraw, texts: list[GridAnnotation], font, max_width: int) -> list[GridAnnotation]:
    """The annotations of one column/row title, wrapped to ``max_width`` and measured."""
    laid_out = []
    for annotation in texts:
        for line in _wrap(draw, annotation.text, font, max_width):
            left, top, right, bottom = draw.multiline_textbbox((0, 0), line, font=font)
            laid_out.append(GridAnnotation(line, annotation.is_active, (right - left, bottom - top), max_width))
    return laid_out


def _draw_lines(draw: ImageDraw.ImageDraw, center_x: float, top: float, lines: list[GridAnnotation],
                font_size: int, line_spacing: int) -> None:
    active = ImageColor.getcolor(TEXT_ACTIVE, "RGB")
    inactive = ImageColor.getcolor(TEXT_INACTIVE, "RGB")
    y = top
    for line in lines:
        size = font_size
        font = _font(size)
        while size > 1 and draw.textlength(line.text, font=font) > line.allowed_width:
            size -= 1
            font = _font(size)
        middle = y + line.size[1] / 2
        draw.multiline_text((center_x, middle), line.text, font=font, fill=active if line.is_active else inactive,
                            anchor="mm", align="center")
        if not line.is_active:
            half = line.size[0] // 2
            draw.line((center_x - half, y + line.size[1] // 2, center_x + half, y + line.size[1] // 2),
                      fill=inactive, width=STRIKE_WIDTH)
        y += line.size[1] + line_spacing


def draw_grid_annotations(grid: Image.Image, cell_width: int, cell_height: int,
                          hor_texts: list[list[GridAnnotation]], ver_texts: list[list[GridAnnotation]],
                          margin: int = 0) -> Image.Image:
    """A new image: ``grid``'s cells spaced by ``margin``, a band of column titles on top and of row
    titles on the left (each band only when it has text). One list of annotations per column/row."""
    margin = int(margin)  # a UI slider may send 10.0
    cols = grid.width // cell_width
    rows = grid.height // cell_height
    if len(hor_texts) != cols:
        raise ValueError(f"bad number of horizontal texts: {len(hor_texts)}; must be {cols}")
    if len(ver_texts) != rows:
        raise ValueError(f"bad number of vertical texts: {len(ver_texts)}; must be {rows}")

    font_size = (cell_width + cell_height) // 25
    line_spacing = font_size // 2
    font = _font(font_size)
    has_row_titles = any(annotation.text for texts in ver_texts for annotation in texts)
    pad_left = cell_width * 3 // 4 if has_row_titles else 0

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    hor_lines = [_layout(measure, texts, font, cell_width) for texts in hor_texts]
    ver_lines = [_layout(measure, texts, font, pad_left) for texts in ver_texts]

    hor_heights = [sum(line.size[1] + line_spacing for line in lines) - line_spacing for lines in hor_lines]
    # A1111 leaves the spacing out of the row titles' height when centring them; kept for equal layouts.
    ver_heights = [sum(line.size[1] for line in lines) for lines in ver_lines]
    pad_top = max(hor_heights) + line_spacing * 2 if sum(hor_heights) else 0

    result = Image.new("RGB", (grid.width + pad_left + margin * (cols - 1), grid.height + pad_top + margin * (rows - 1)),
                       ImageColor.getcolor(BACKGROUND, "RGB"))
    for row in range(rows):
        for col in range(cols):
            cell = grid.crop((cell_width * col, cell_height * row, cell_width * (col + 1), cell_height * (row + 1)))
            result.paste(cell, (pad_left + (cell_width + margin) * col, pad_top + (cell_height + margin) * row))

    draw = ImageDraw.Draw(result)
    for col, lines in enumerate(hor_lines):
        center_x = pad_left + (cell_width + margin) * col + cell_width / 2
        _draw_lines(draw, center_x, pad_top / 2 - hor_heights[col] / 2, lines, font_size, line_spacing)
    for row, lines in enumerate(ver_lines):
        top = pad_top + (cell_height + margin) * row + cell_height / 2 - ver_heights[row] / 2
        _draw_lines(draw, pad_left / 2, top, lines, font_size, line_spacing)
    return result


def draw_prompt_matrix(grid: Image.Image, width: int, height: int, all_prompts: list[str], margin: int = 0) -> Image.Image:
    """The prompt-matrix legend: ``all_prompts`` is the prompt split at ``|``; the first half of the
    variable parts titles the columns, the rest the rows, each shown on (black) or off (struck)."""
    parts = all_prompts[1:]
    boundary = math.ceil(len(parts) / 2)
    horizontal, vertical = parts[:boundary], parts[boundary:]

    def titles(texts: list[str]) -> list[list[GridAnnotation]]:
        return [[GridAnnotation(text, is_active=bool(combination & (1 << i))) for i, text in enumerate(texts)]
                for combination in range(1 << len(texts))]

    return draw_grid_annotations(grid, width, height, titles(horizontal), titles(vertical), margin)
