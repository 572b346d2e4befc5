"""Which simulcast layer to ask Janus for, given the tile the layout draws a participant in.

A simulcast publisher sends the same video at up to three sizes; Janus forwards one of them per
subscriber m-line, chosen with `configure` (`streams: [{mid, substream, temporal}]`). Receiving
the top layer for a thumbnail wastes the publisher's uplink, Janus' forwarding, our decoder and
our scaler; receiving a layer smaller than the tile makes the recording blurry. So the recorder
asks for the smallest layer that still fills the tile.

Browsers' default ladder (and janus.js') halves each layer: layer k of n is the top layer scaled
down by 2^(n-1-k). The top layer's size is not announced; the connector estimates it from the
size it decodes at the layer Janus says it forwards (`top_layer_size`). Janus numbers the layers
in the order of the publisher's rids, highest first (janus.js sends `h;m;l`): substream 0 is the
smallest.
"""

from __future__ import annotations

from layouts.model import Fit, Size

SIMULCAST_LAYERS = 3  # substreams 0 (smallest) .. 2 (top), as browsers and janus.js send them
TOP_SUBSTREAM = SIMULCAST_LAYERS - 1
ALL_TEMPORAL_LAYERS = 2  # temporal layer 2: every frame (the recording is 30 fps)
# A layer may be this much smaller than the tile and still count as filling it: a 1/0.85
# upscale is invisible after the encoder, and it keeps a 640x360 layer for a 700x394 tile.
FILL_TOLERANCE = 0.85


def layer_size(top: Size, substream: int, layers: int = SIMULCAST_LAYERS) -> Size:
    """The size of `substream` in a halving ladder whose top layer is `top`."""
    factor = 2 ** (layers - 1 - substream)
    return Size(max(1, top.width // factor), max(1, top.height // factor))


def top_layer_size(received: Size, substream: int, layers: int = SIMULCAST_LAYERS) -> Size:
    """The top layer's size, from a frame decoded while receiving `substream`."""
    factor = 2 ** (layers - 1 - substream)
    return Size(received.width * factor, received.height * factor)


def substream_for_tile(
    tile: Size, top: Size | None, fit: Fit = Fit.FILL, layers: int = SIMULCAST_LAYERS
) -> int:
    """The smallest substream that fills `tile` (the top one when none does, or when the top
    layer's size is not known yet).

    The tile's aspect ratio may differ from the video's, so the layer must match the tile in the
    dimension that binds: a camera fills its tile and is cropped (`Fit.FILL`: the larger of the
    two scales), a screen fits inside its tile (`Fit.FIT`: the smaller).
    """
    if top is None or tile.width <= 0 or tile.height <= 0:
        return layers - 1
    pick = max if fit is Fit.FILL else min
    for substream in range(layers):
        size = layer_size(top, substream, layers)
        scale = pick(tile.width / size.width, tile.height / size.height)  # compositor's upscale
        if scale <= 1 / FILL_TOLERANCE:
            return substream
    return layers - 1
