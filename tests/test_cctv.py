"""CCTV exports as they come: every format in, the same frames, frame times, field order and
audio bytes out, the faces masked, the output in the container the written rule chooses.

The clips are made here (tests/cctv.py, tests/dav.py) the way DVRs and export tools write
them: raw H.264/H.265 elementary streams, MJPEG AVI with frames the recorder dropped,
interlaced MPEG-2 TS with MP2 audio, AVI with G.711, Dahua .dav with G.711, and files whose
extension is wrong or missing. Each goes through `process_file`, as the service and the CLI
run it, with its output named by `output_name`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

av = pytest.importorskip("av")

from cctv import read_clip, write_clip, write_dav_clip, face_changed  # noqa: E402

from anond.media import kind_of  # noqa: E402
from anond.media.containers import output_name  # noqa: E402
from anond.pipeline import process_file  # noqa: E402

MASKED = 12.0  # mean change inside the face box of a masked frame (unmasked: under 3)


def anonymize(src: Path, settings, engine, out_dir: Path | None = None):
    out_dir = out_dir or src.parent / "out"
    out_dir.mkdir(exist_ok=True)
    dst = out_dir / output_name(src, drop_data_tags=settings.video.drop_data_tags)
    report = process_file(src, dst, settings=settings, engine=engine, job_id="cctv")
    assert report.output_path == dst and dst.exists()
    return dst, report


def assert_same_timeline(src, out) -> None:
    assert out.frames == src.frames
    assert out.indexes == src.indexes == list(range(src.frames))  # every frame, in order
    assert out.times == src.times
    assert out.size == src.size
    assert field_order(out) == field_order(src) and out.interlaced == src.interlaced
    assert out.audio_codec == src.audio_codec and out.audio == src.audio  # byte for byte


def field_order(clip) -> str:
    """A stream that does not say (MJPEG in AVI, WMV) and holds no interlaced frame is
    progressive."""
    return "progressive" if clip.field_order == "unknown" and not any(clip.interlaced) \
        else clip.field_order


def assert_faces_masked(src, out) -> None:
    changes = face_changed(src, out)
    assert min(changes) > MASKED, [round(c, 1) for c in changes]


def test_raw_h264_stays_raw_h264_at_the_rate_it_announces(tmp_path, astronaut, face_settings,
                                                          face_engine):
    src_path = tmp_path / "cam1.264"
    src = write_clip(src_path, astronaut, muxer="h264", codec="libx264", rate=Fraction(30000, 1001))
    assert kind_of(src_path).format == "h264"
    dst, report = anonymize(src_path, face_settings, face_engine)
    assert dst.name == "cam1.264"
    out = read_clip(dst)
    assert out.container == "h264"
    assert_same_timeline(src, out)
    assert_faces_masked(src, out)
    video = report.parameters["video"]
    assert video["timestamps"] == "stream_rate" and report.media.fps == pytest.approx(29.97, abs=0.01)
    assert (video["container"], video["container_rule"]) == ("h264", "same")


def test_raw_hevc_without_timing_takes_the_configured_rate(tmp_path, astronaut, face_settings,
                                                           face_engine):
    src_path = tmp_path / "cam2.h265"
    write_clip(src_path, astronaut, muxer="hevc", codec="libx265", n=12,
               options={"x265-params": "log-level=error:vui-timing-info=0"})
    video = face_settings.video.model_copy(update={"raw_fps": 12.5})
    slow = face_settings.model_copy(update={"video": video})
    dst, report = anonymize(src_path, slow, face_engine)
    assert dst.name == "cam2.h265"
    out = read_clip(dst)
    assert out.container == "hevc" and out.frames == 12 and out.indexes == list(range(12))
    # The output announces the rate it was numbered at, so players show it at that speed.
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.framerate == Fraction(25, 2)
    assert report.parameters["video"]["timestamps"] == "configured_rate"


def test_mjpeg_avi_with_dropped_frames_keeps_its_gaps_and_pcm(tmp_path, astronaut, face_settings,
                                                              face_engine):
    src_path = tmp_path / "export.avi"
    slots = [0, 1, 2, 22, 23, 24, 30, 31, 32, 33, 40, 41]  # frame 3 at 0.88 s: the recorder dropped 19
    src = write_clip(src_path, astronaut, muxer="avi", codec="mjpeg", n=len(slots), slots=slots,
                     pix_fmt="yuvj420p", audio="pcm_s16le")
    assert src.times[3] == Fraction(22, 25)
    dst, report = anonymize(src_path, face_settings, face_engine)
    out = read_clip(dst)
    assert dst.name == "export.avi" and out.container == "avi"
    assert_same_timeline(src, out)
    assert_faces_masked(src, out)
    assert report.parameters["video"]["timestamps"] == "index" and report.media.audio == "copied"


@pytest.mark.parametrize("codec,options,order", [
    ("mpeg2video", {"flags": "+ildct+ilme"}, "bb"),  # FFmpeg's MPEG-2 encoder: bottom field first
    ("libx264", {"x264-params": "tff=1"}, "tt"),
])
def test_interlaced_ts_stays_interlaced_in_its_field_order(tmp_path, astronaut, face_settings,
                                                           face_engine, codec, options, order):
    src_path = tmp_path / "dvr.ts"
    src = write_clip(src_path, astronaut, muxer="mpegts", codec=codec, n=12, size=(352, 288),
                     options=options, audio="mp2", audio_rate=32000, audio_chunk=1152)
    assert src.field_order == order and all(src.interlaced)
    dst, report = anonymize(src_path, face_settings, face_engine)
    out = read_clip(dst)
    assert dst.name == "dvr.ts" and out.container == "mpegts"
    assert_same_timeline(src, out)
    assert_faces_masked(src, out)
    assert report.parameters["video"]["field_order"] == order


def test_g711_in_avi_is_copied_packet_for_packet(tmp_path, astronaut, face_settings, face_engine):
    src_path = tmp_path / "door.avi"
    src = write_clip(src_path, astronaut, muxer="avi", codec="libx264", n=12, audio="pcm_mulaw",
                     options={"bf": "0"})
    dst, report = anonymize(src_path, face_settings, face_engine)
    out = read_clip(dst)
    assert dst.name == "door.avi" and out.audio_codec == "pcm_mulaw"
    assert_same_timeline(src, out)
    assert report.media.audio == "copied"


def test_dahua_dav_goes_to_a_container_that_holds_its_g711(tmp_path, astronaut, face_settings,
                                                           face_engine):
    # FFmpeg writes no DHAV; MP4 and Matroska cannot hold A-law: the rule's last fallback, MOV.
    src_path = tmp_path / "NVR_ch1_main_20240506.dav"
    src = write_dav_clip(src_path, astronaut)
    assert kind_of(src_path).format == "dhav" and src.audio_codec == "pcm_alaw"
    dst, report = anonymize(src_path, face_settings, face_engine)
    assert dst.name == "NVR_ch1_main_20240506.dav.mov"
    out = read_clip(dst)
    assert_same_timeline(src, out)
    assert_faces_masked(src, out)
    video = report.parameters["video"]
    assert (video["container"], video["container_rule"]) == ("mov", "fallback")
    # The DVR's clock (seconds since 1970) does not become a decades-long empty edit.
    with av.open(str(dst)) as c:
        assert c.streams.video[0].start_time * c.streams.video[0].time_base < 1


@pytest.mark.parametrize("name,muxer,codec,audio,rate,chunk,out_name,rule", [
    ("a.wmv", "asf", "wmv2", "wmav2", 44100, 2048, "a.wmv", "same"),  # WMA: only ASF holds it
    ("b.flv", "flv", "libx264", "aac", 22050, 1024, "b.flv", "same"),
    ("c.mpg", "vob", "mpeg2video", "mp2", 48000, 1152, "c.mpg.mp4", "fallback"),
    ("d.m2ts", "mpegts", "libx264", "ac3", 48000, 1536, "d.m2ts", "same"),  # 192-byte packets
    ("e.3gp", "3gp", "libx264", "aac", 16000, 1024, "e.3gp", "same"),
    ("f.mkv", "matroska", "libx264", "pcm_s16le", 8000, 400, "f.mkv", "same"),
    ("g.avi", "avi", "mpeg4", "adpcm_ima_wav", 8000, 505, "g.avi", "same"),
])
def test_other_export_containers(tmp_path, astronaut, face_settings, face_engine, name, muxer,
                                 codec, audio, rate, chunk, out_name, rule):
    src_path = tmp_path / name
    src = write_clip(src_path, astronaut, muxer=muxer, codec=codec, n=10, audio=audio,
                     audio_rate=rate, audio_chunk=chunk)
    dst, report = anonymize(src_path, face_settings, face_engine)
    assert dst.name == out_name and report.parameters["video"]["container_rule"] == rule
    out = read_clip(dst)
    if src.audio_codec == "mp2":  # MP4 files MPEG audio layers under one tag: FFmpeg says mp3
        out.audio_codec = "mp2" if out.audio_codec in ("mp3", "mp3float") else out.audio_codec
    assert_same_timeline(src, out)
    assert_faces_masked(src, out)
    assert report.media.audio == "copied"


@pytest.mark.parametrize("name,muxer,codec,size", [
    ("a.mxf", "mxf", "mpeg2video", (720, 576)),  # broadcast and evidence archives
    ("b.dv", "dv", "dvvideo", (720, 576)),
    ("c.nut", "nut", "libx264", (320, 240)),
    ("d.ivf", "ivf", "libvpx-vp9", (320, 240)),
])
def test_what_ffmpeg_demuxes_beyond_the_known_signatures_goes_to_the_fallback(
        tmp_path, astronaut, face_settings, face_engine, name, muxer, codec, size):
    src_path = tmp_path / name
    src = write_clip(src_path, astronaut, muxer=muxer, codec=codec, n=6, size=size,
                     options={"b": "8M"} if codec == "mpeg2video" else None)
    assert kind_of(src_path).format == f"probed:{muxer}"
    dst, report = anonymize(src_path, face_settings, face_engine)
    assert dst.name == name + ".mp4" and report.parameters["video"]["container_rule"] == "fallback"
    out = read_clip(dst)
    assert out.frames == src.frames and out.indexes == src.indexes and out.times == src.times
    assert_faces_masked(src, out)


def test_a_hikvision_style_ps_behind_its_imkh_header(tmp_path, astronaut, face_settings,
                                                     face_engine):
    ps = tmp_path / "ps.mpg"
    src = write_clip(ps, astronaut, muxer="vob", codec="mpeg2video", n=6, options={"b": "6M"})
    export = tmp_path / "ch01_20240506.mp4"  # what such exports are called
    export.write_bytes(b"IMKH\x01\x00" + bytes(34) + ps.read_bytes())
    assert kind_of(export).format == "mpegps"
    dst, _ = anonymize(export, face_settings, face_engine)
    assert dst.name == "ch01_20240506.mp4"  # PS becomes MP4: the name already says so
    out = read_clip(dst)
    assert out.frames == 6 and out.indexes == list(range(6))
    assert_faces_masked(src, out)


def test_a_wrong_or_missing_extension_is_handled_by_the_content(tmp_path, astronaut, face_settings,
                                                                face_engine):
    ts_as_mp4 = tmp_path / "clip.mp4"
    src = write_clip(ts_as_mp4, astronaut, muxer="mpegts", codec="libx264", n=8, audio="mp2",
                     audio_rate=32000, audio_chunk=1152)
    dst, _ = anonymize(ts_as_mp4, face_settings, face_engine)
    assert dst.name == "clip.mp4.ts" and read_clip(dst).container == "mpegts"
    assert_same_timeline(src, read_clip(dst))
    nameless = tmp_path / "channel3"
    raw = write_clip(nameless, astronaut, muxer="h264", codec="libx264", n=8)
    dst, _ = anonymize(nameless, face_settings, face_engine)
    assert dst.name == "channel3.264"
    assert_same_timeline(raw, read_clip(dst))


def test_an_explicit_output_name_must_say_the_format_written(tmp_path, astronaut, face_settings,
                                                             face_engine):
    from anond.errors import ConfigError

    src_path = tmp_path / "cam.dav"
    write_dav_clip(src_path, astronaut, n=4)
    with pytest.raises(ConfigError, match=r"must end in \.mov"):
        process_file(src_path, tmp_path / "cam-out.dav", settings=face_settings, engine=face_engine,
                     job_id="x")
    assert not (tmp_path / "cam-out.dav").exists()



def test_a_tree_takes_files_by_content_and_names_outputs_for_it(tmp_path, astronaut, face_settings):
    from anond.commands.process import _plan_tree

    src, dst = tmp_path / "export", tmp_path / "masked"
    (src / "cam").mkdir(parents=True)
    write_clip(src / "cam" / "channel3", astronaut, muxer="h264", codec="libx264", n=4)
    write_dav_clip(src / "cam" / "NVR.dav", astronaut, n=4)
    write_clip(src / "cam" / "tape.mxf", astronaut, muxer="mxf", codec="mpeg2video", n=4,
               size=(720, 576), options={"b": "8M"})  # known to FFmpeg's probe only
    (src / "cam" / "notes.txt").write_text("shift log\n")
    jobs, skipped = _plan_tree(src, dst, face_settings)
    assert sorted(out.relative_to(dst).as_posix() for _, out in jobs) == \
        ["cam/NVR.dav.mov", "cam/channel3.264", "cam/tape.mxf.mp4"]
    assert skipped == 1
