"""Request and response shapes of the serve API (what ``/docs`` shows)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    """Every error response: one line saying what went wrong."""

    detail: str


class ConfigOut(BaseModel):
    """What the page needs to know before the first request."""

    version: str
    model: str
    max_upload_mb: float
    has_index: bool
    has_data: bool
    n_clips: int
    threshold: float | None = Field(description="the model's default detection threshold")


class SegmentOut(BaseModel):
    """A stretch of a clip in seconds; ``score`` only for detected segments."""

    onset: float
    offset: float
    score: float | None = None


class PhraseRefOut(BaseModel):
    """A caption's sound phrase and its ground-truth segments."""

    text: str
    annotated: bool
    segments: list[SegmentOut]


class CaptionOut(BaseModel):
    """A corpus caption with its annotated phrases."""

    caption_id: str
    text: str
    phrases: list[PhraseRefOut]


class ClipOut(BaseModel):
    """A clip the page can pick; play it with ``/api/audio/{id}``."""

    id: str
    name: str
    source: str = Field(description="'index' or 'data'")
    split: str | None = None
    duration: float | None = None
    n_captions: int = 0


class ClipListOut(BaseModel):
    """One page of the filtered clip list."""

    total: int
    clips: list[ClipOut]


class ClipDetailOut(ClipOut):
    """A clip with its captions (corpus clips only)."""

    captions: list[CaptionOut] = []


class SearchHitOut(BaseModel):
    """A ranked search result and its best-matching span."""

    rank: int
    id: str
    name: str
    score: float
    onset: float
    offset: float
    audio_url: str


class SearchOut(BaseModel):
    """Ranked results of a text query over the index."""

    query: str
    results: list[SearchHitOut]


class SpectrogramOut(BaseModel):
    """A log-mel spectrogram picture covering ``[0, duration]`` s and ``[fmin, fmax]`` Hz."""

    image: str = Field(description="PNG as a data: URL, low frequencies at the bottom")
    duration: float
    fmin: float
    fmax: float


class GroundedPhraseOut(BaseModel):
    """One phrase's activation over time, detected segments and (corpus clips) ground truth."""

    phrase: str
    times: list[float]
    activation: list[float]
    segments: list[SegmentOut]
    reference: list[SegmentOut] | None = Field(
        None, description="ground-truth segments of the same phrase in the clip's captions"
    )


class GroundOut(BaseModel):
    """The result of grounding phrases in one clip."""

    clip: ClipDetailOut
    sample_rate: int
    threshold: float | None
    spectrogram: SpectrogramOut
    phrases: list[GroundedPhraseOut]
    seconds: float = Field(description="server time spent decoding and grounding")
