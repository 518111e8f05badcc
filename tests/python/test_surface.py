"""docker-py against the routes around a commit (issue 13): info, df,
diff, export, import, save/load and image prune.

Run by tests/tests/surface.rs, which starts containerd, a container that
wrote /made-by, and the daemon, and passes them in the environment.
"""
import io
import os
import tarfile

import docker
import pytest

SOCKET = os.environ["COMMITD_SOCKET"]
CONTAINER = os.environ["COMMITD_CONTAINER"]


@pytest.fixture(scope="module")
def client():
    c = docker.DockerClient(base_url=f"unix://{SOCKET}", version="auto", timeout=120)
    yield c
    c.close()


def test_info_and_df(client):
    info = client.info()
    assert info["Driver"] == "overlayfs"
    assert info["Containers"] >= 1 and info["ContainersRunning"] >= 1
    df = client.df()
    ids = [c["Id"] for c in df["Containers"]]
    assert CONTAINER in ids
    assert df["LayersSize"] > 0


def test_diff(client):
    changes = client.containers.get(CONTAINER).diff()
    assert {"Path": "/made-by", "Kind": 1} in changes, changes


def test_export_then_import_then_save_and_load(client):
    data = b"".join(client.containers.get(CONTAINER).export())
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        assert t.extractfile("made-by").read() == b"docker-py\n"
    out = client.api.import_image_from_data(
        data, repository="py/imported", tag="1", changes=["ENV PATH=/bin"]
    )
    assert "sha256:" in out, out
    img = client.images.get("py/imported:1")
    assert img.attrs["Config"]["Env"] == ["PATH=/bin"]
    archive = b"".join(img.save(named=True))
    client.images.remove("py/imported:1")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("py/imported:1")
    loaded = client.images.load(archive)
    assert [i.id for i in loaded] == [img.id]
    assert "py/imported:1" in client.images.get(img.id).tags


def test_prune(client):
    c = client.containers.get(CONTAINER)
    img = c.commit()  # untagged: dangling
    report = client.images.prune()
    assert {"Deleted": img.id} in report["ImagesDeleted"], report
    assert report["SpaceReclaimed"] > 0
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(img.id)
    # Nothing left to prune: Docker's null.
    assert client.images.prune() == {"ImagesDeleted": None, "SpaceReclaimed": 0}
    # -a keeps the image the container uses.
    client.images.prune(filters={"dangling": False})
    assert client.images.list(), "the container's image stays"
