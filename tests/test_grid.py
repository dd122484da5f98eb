"""Grid layout and legends (modules/core/grid.py), checked against A1111's rules."""

from PIL import Image
import pytest

from modules.core.grid import (
    GridAnnotation, draw_grid_annotations, draw_prompt_matrix, grid_rows, image_grid,
)

RED, GREEN, BLUE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)
WHITE = (255, 255, 255)


def solid(colour, size=(64, 64)):
    return Image.new("RGB", size, colour)


@pytest.mark.parametrize("count, kwargs, rows", [
    (4, {}, 2),                                  # round(sqrt(4))
    (5, {}, 2),                                  # round(2.236)
    (7, {}, 3),                                  # round(2.645)
    (5, {"rows": 1}, 1),
    (3, {"rows": 10}, 3),                        # capped at the image count
    (6, {"n_rows": 3}, 3),
    (6, {"n_rows": 0, "batch_size": 2}, 2),      # n_rows 0: one row per batch
    (6, {"prevent_empty_spots": True}, 2),
    (7, {"prevent_empty_spots": True}, 1),       # 7 is prime: one row
    (8, {"prevent_empty_spots": True}, 2),
    (9, {"prevent_empty_spots": True, "n_rows": 1}, 1),  # n_rows wins over empty-spot avoidance
])
def test_grid_rows_follow_a1111(count, kwargs, rows):
    assert grid_rows(count, **kwargs) == rows


def test_image_grid_places_images_row_by_row_and_fills_the_rest_with_background():
    colours = [RED, GREEN, BLUE, BLACK, (10, 20, 30)]
    grid = image_grid([solid(c) for c in colours])  # 5 images: 2 rows, 3 columns
    assert grid.size == (3 * 64, 2 * 64)
    for i, colour in enumerate(colours):
        assert grid.getpixel((i % 3 * 64 + 32, i // 3 * 64 + 32)) == colour
    assert grid.getpixel((2 * 64 + 32, 64 + 32)) == WHITE


def test_image_grid_cells_take_the_largest_size_and_centre_smaller_images():
    grid = image_grid([solid(RED, (64, 32)), solid(GREEN, (32, 64))], rows=1)
    assert grid.size == (128, 64)
    assert grid.getpixel((32, 32)) == RED and grid.getpixel((32, 4)) == WHITE  # red band centred vertically
    assert grid.getpixel((64 + 32, 32)) == GREEN and grid.getpixel((64 + 4, 32)) == WHITE


def test_image_grid_rejects_no_images():
    with pytest.raises(ValueError):
        image_grid([])


def _two_by_two():
    return image_grid([solid(c, (100, 80)) for c in (RED, GREEN, BLUE, BLACK)], rows=2)


def test_annotations_add_a_top_band_and_a_left_band_and_move_cells():
    grid = _two_by_two()
    hor = [[GridAnnotation("Steps: 10")], [GridAnnotation("Steps: 20")]]
    ver = [[GridAnnotation("Euler")], [GridAnnotation("DDIM")]]
    result = draw_grid_annotations(grid, 100, 80, hor, ver)
    pad_left = 100 * 3 // 4
    pad_top = result.height - grid.height
    assert result.width == grid.width + pad_left
    assert pad_top > 0
    assert result.getpixel((pad_left + 50, pad_top + 40)) == RED
    assert result.getpixel((pad_left + 150, pad_top + 120)) == BLACK
    top_band = result.crop((pad_left, 0, result.width, pad_top))
    left_band = result.crop((0, pad_top, pad_left, result.height))
    assert min(top_band.convert("L").getdata()) < 100  # dark text drawn in the band
    assert min(left_band.convert("L").getdata()) < 100


def test_annotations_margin_spaces_the_cells():
    grid = _two_by_two()
    hor = [[GridAnnotation("a")], [GridAnnotation("b")]]
    ver = [[GridAnnotation("c")], [GridAnnotation("d")]]
    plain = draw_grid_annotations(grid, 100, 80, hor, ver)
    spaced = draw_grid_annotations(grid, 100, 80, hor, ver, margin=12.0)  # sliders may send floats
    assert spaced.size == (plain.width + 12, plain.height + 12)
    pad_top = plain.height - grid.height
    assert spaced.getpixel((75 + 100 + 6, pad_top + 40)) == WHITE  # the gap between columns
    assert spaced.getpixel((75 + 112 + 50, pad_top + 40)) == GREEN


def test_empty_texts_add_no_bands():
    grid = _two_by_two()
    empty = [[GridAnnotation("")], [GridAnnotation("")]]
    assert draw_grid_annotations(grid, 100, 80, empty, empty).size == grid.size
    hor_only = draw_grid_annotations(grid, 100, 80, [[GridAnnotation("x")], [GridAnnotation("y")]], empty)
    assert hor_only.width == grid.width and hor_only.height > grid.height


def test_long_titles_wrap_into_more_lines():
    grid = image_grid([solid(RED, (200, 200)), solid(GREEN, (200, 200))], rows=1)
    empty = [[GridAnnotation("")]]
    short = draw_grid_annotations(grid, 200, 200, [[GridAnnotation("cat")], [GridAnnotation("dog")]], empty)
    long_text = "a very long prompt with many words that cannot possibly fit on one line"
    wrapped = draw_grid_annotations(grid, 200, 200, [[GridAnnotation(long_text)], [GridAnnotation("dog")]], empty)
    short_band, wrapped_band = short.height - grid.height, wrapped.height - grid.height
    assert wrapped_band > 2 * short_band  # three or more lines instead of one
    assert wrapped.width == short.width


def test_inactive_text_is_grey_and_struck_through():
    grid = image_grid([solid(RED, (200, 200))], rows=1)
    empty = [[GridAnnotation("")]]
    active = draw_grid_annotations(grid, 200, 200, [[GridAnnotation("word")]], empty)
    inactive = draw_grid_annotations(grid, 200, 200, [[GridAnnotation("word", is_active=False)]], empty)
    band = lambda im: im.crop((0, 0, 200, im.height - 200))  # noqa: E731
    assert (0, 0, 0) in set(band(active).getdata())
    assert (0, 0, 0) not in set(band(inactive).getdata())
    assert (153, 153, 153) in set(band(inactive).getdata())
    # the strike-through runs across the text's middle: a long grey run on one row
    pixels = band(inactive).load()
    rows_with_long_grey_run = [y for y in range(band(inactive).height)
                               if sum(pixels[x, y] == (153, 153, 153) for x in range(200)) > 20]
    assert rows_with_long_grey_run


def test_wrong_number_of_texts_is_an_error():
    grid = _two_by_two()
    one = [[GridAnnotation("a")]]
    two = [[GridAnnotation("a")], [GridAnnotation("b")]]
    with pytest.raises(ValueError, match="horizontal"):
        draw_grid_annotations(grid, 100, 80, one, two)
    with pytest.raises(ValueError, match="vertical"):
        draw_grid_annotations(grid, 100, 80, two, one)


def test_prompt_matrix_legend_splits_parts_between_columns_and_rows():
    # base|a|b|c: columns are the 4 on/off states of a, b; rows the 2 states of c
    cells = [solid((i * 30, 0, 0), (80, 80)) for i in range(8)]
    grid = image_grid(cells, rows=2)
    result = draw_prompt_matrix(grid, 80, 80, ["base", "a", "b", "c"])
    assert result.width > grid.width and result.height > grid.height
    with pytest.raises(ValueError):  # 8 cells in one row do not fit 4 column titles
        draw_prompt_matrix(image_grid(cells, rows=1), 80, 80, ["base", "a", "b", "c"])
