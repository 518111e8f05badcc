"""docker-py against commitd: the Docker SDK for Python as a real client.

Run by tests/tests/clients.rs, which starts containerd, a container and the
daemon and passes them in the environment.
"""
import os

import docker
import pytest

SOCKET = os.environ["COMMITD_SOCKET"]
CONTAINER = os.environ["COMMITD_CONTAINER"]


@pytest.fixture(scope="module")
def client():
    c = docker.DockerClient(base_url=f"unix://{SOCKET}", version="auto", timeout=120)
    yield c
    c.close()


def test_ping_and_version(client):
    assert client.ping() is True
    v = client.version()
    assert v["ApiVersion"] >= "1.41"
    assert any(c["Name"] == "containerd" for c in v["Components"])


def test_commit_through_the_low_level_api(client):
    res = client.api.commit(
        CONTAINER,
        repository="py/low",
        tag="1",
        message="from docker-py",
        author="pytest",
        changes=["ENV FROM_PY=1", 'CMD ["cat", "/made-by"]'],
    )
    assert res["Id"].startswith("sha256:")
    img = client.images.get("py/low:1")
    assert img.id == res["Id"]
    assert "FROM_PY=1" in img.attrs["Config"]["Env"]
    assert img.attrs["Config"]["Cmd"] == ["cat", "/made-by"]
    assert img.attrs["Author"] == "pytest"
    assert "py/low:1" in img.tags


def test_container_commit_as_agents_do(client):
    ctr = client.containers.get(CONTAINER)
    assert ctr.status == "running"
    img = ctr.commit(repository="py/agent", tag="snap", message="snapshot")
    assert img.tags == ["py/agent:snap"]
    hist = img.history()
    assert hist[0]["Comment"] == "snapshot"


def test_images_list_tag_remove(client):
    names = [t for i in client.images.list() for t in i.tags]
    assert "py/low:1" in names
    img = client.images.get("py/low:1")
    assert img.tag("py/low", "again") is True
    assert "py/low:again" in client.images.get("py/low:again").tags
    client.images.remove("py/low:again")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("py/low:again")


def test_errors_are_typed(client):
    with pytest.raises(docker.errors.NotFound):
        client.api.commit("no-such-container", repository="x")
    with pytest.raises(docker.errors.APIError) as e:
        client.api.commit(CONTAINER, repository="x", changes=["RUN echo no"])
    assert e.value.status_code == 400
    assert "RUN is not a valid change command" in str(e.value)
