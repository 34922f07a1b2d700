"""pyrender rendering of MNIST Dice scene specs (JUMP, Kumar, Eslami et al., ICLR 2019, sec. 4.2).

Headless on the CPU through EGL on Mesa llvmpipe (docs/architecture.md, "Headless rendering"): PYOPENGL_PLATFORM
is set to egl before OpenGL is imported, NumPy 2's missing `np.infty` is restored for
pyrender 0.1.45, and the spot light's shadow map is SHADOW_MAP texels square. One
OffscreenRenderer per process, reused for every scene; a scene is a fresh pyrender.Scene
(a few ms, shared by all its views). A process that forks closes its renderers first (a child
of a process holding an EGL context hangs) and reopens them on next use.

The room's procedural textures and the die's digit atlas are drawn with numpy here, from the
spec's `room_seed`, `room_patterns`, colours and digits.
"""
from __future__ import annotations

import os

import numpy as np

from jumpbench.errors import JumpbenchError
from jumpbench.generators import dice_scene as geo

SHADOW_MAP = 2048  # texels (pyrender's default); rendered once per scene, see _reuse_shadow_map
TILE = 32          # texels per die face (a 28x28 digit with a 2-texel margin)
ROOM_TILE = 32     # texels per repeat of a room texture
INSTALL = "libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri"
FACE_RGB = np.array([236, 230, 214], float)  # ivory face
INK_RGB = np.array([28, 24, 22], float)       # engraved digit


def _import_pyrender():
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    # llvmpipe rasterises in this thread: no rasteriser threads to hang a forked child, and
    # worker processes, not threads, use the cores (before Mesa is loaded)
    os.environ.setdefault("LP_NUM_THREADS", "0")
    if not hasattr(np, "infty"):
        np.infty = np.inf  # pyrender 0.1.45 on NumPy 2
    import pyrender
    import pyrender.light
    import pyrender.renderer

    pyrender.light.SHADOW_TEX_SZ = pyrender.renderer.SHADOW_TEX_SZ = SHADOW_MAP
    return pyrender


def room_texture(rng: np.random.Generator, pattern: int, color: np.ndarray, n: int = ROOM_TILE) -> np.ndarray:
    """An (n, n, 3) uint8 tile of a procedural pattern (geo.PATTERNS) in shades of `color`."""
    y, x = np.mgrid[0:n, 0:n] / n
    name = geo.PATTERNS[pattern]
    k = int(rng.integers(2, 5))
    if name == "stripes":
        shade = ((x if rng.integers(2) else y) * k % 1 < 0.5).astype(float)
    elif name == "checks":
        shade = ((np.floor(x * k) + np.floor(y * k)) % 2).astype(float)
    elif name == "noise":
        shade = np.kron(rng.uniform(0, 1, (2 * k, 2 * k)), np.ones((n // (2 * k) + 1,) * 2))[:n, :n]
    else:  # grain
        shade = rng.uniform(0, 1, (n, n))
    shade = 0.7 + 0.3 * shade
    return np.clip(color[None, None] * shade[..., None] * 255, 0, 255).astype(np.uint8)


def room_atlas(spec: dict) -> np.ndarray:
    """(5*ROOM_TILE, 3*ROOM_TILE, 3) uint8: each wall's tile repeated 3 times in a row, then
    the floor's 3x3 times (the repeats of room_geometry's uvs, one texture for the room)."""
    rng = np.random.default_rng(spec["room_seed"])
    colors = np.concatenate([spec["wall_colors"], spec["floor_color"][None]])
    tiles = [room_texture(rng, int(p), c) for p, c in zip(spec["room_patterns"], colors)]
    return np.concatenate([np.tile(t, (1, 3, 1)) for t in tiles[:4]] + [np.tile(tiles[4], (3, 3, 1))])


def digit_atlas(digits: np.ndarray) -> np.ndarray:
    """(2*TILE, 3*TILE, 3) uint8: face f's dark digit on a light tile at row f // 3, column f % 3."""
    atlas = np.zeros((2 * TILE, 3 * TILE, 3), np.uint8)
    m = (TILE - 28) // 2
    for f, digit in enumerate(digits):
        ink = np.zeros((TILE, TILE))
        ink[m:m + 28, m:m + 28] = digit / 255.0
        tile = FACE_RGB[None, None] * (1 - ink[..., None]) + INK_RGB[None, None] * ink[..., None]
        tile[[0, -1], :] = tile[:, [0, -1]] = FACE_RGB * 0.7  # a darker rim marks the edges
        r, c = divmod(f, 3)
        atlas[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = tile.astype(np.uint8)
    return atlas


def _material(pyrender, image: np.ndarray):
    tex = pyrender.Texture(source=image, source_channels="RGB")
    return pyrender.MetallicRoughnessMaterial(baseColorTexture=tex, metallicFactor=0.0, roughnessFactor=1.0)


def _quads(pyrender, corners: np.ndarray, normals: np.ndarray, uvs: np.ndarray, material):
    """One primitive of k quads: corners (k, 4, 3) anticlockwise from outside, uvs (k, 4, 2)."""
    k = len(corners)
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    return pyrender.Primitive(
        positions=corners.reshape(-1, 3).astype(np.float32),
        normals=np.repeat(normals, 4, axis=0).astype(np.float32),
        texcoord_0=uvs.reshape(-1, 2).astype(np.float32),
        indices=(tris[None] + 4 * np.arange(k)[:, None, None]).reshape(-1, 3).astype(np.uint32),
        material=material)


def room_geometry() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walls x+, x-, y+, y- then the floor: corners (5, 4, 3) facing inwards, normals, uvs."""
    R, H = geo.ROOM, geo.WALL
    corners = np.array([
        [[R, R, 0], [R, -R, 0], [R, -R, H], [R, R, H]],
        [[-R, -R, 0], [-R, R, 0], [-R, R, H], [-R, -R, H]],
        [[-R, R, 0], [R, R, 0], [R, R, H], [-R, R, H]],
        [[R, -R, 0], [-R, -R, 0], [-R, -R, H], [R, -R, H]],
        [[-R, -R, 0], [R, -R, 0], [R, R, 0], [-R, R, 0]],
    ], float)
    normals = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, 1]], float)
    # rows of room_atlas, top to bottom: walls 0-3 (one tile high), the floor (three); v = 1 is the top
    first, stop = np.array([0, 1, 2, 3, 4]), np.array([1, 2, 3, 4, 7])  # atlas rows, in tiles
    e = 0.5 / (7 * ROOM_TILE)  # half a texel: no sampling across a neighbour's edge
    uvs = np.stack([[[e, b + e], [1 - e, b + e], [1 - e, t - e], [e, t - e]]
                    for b, t in zip(1 - stop / 7, 1 - first / 7)])
    return corners, normals, uvs


_RENDERER: "DiceRenderer | None" = None  # this process's one renderer (EGL contexts share a display)


def renderer(size: int) -> "DiceRenderer":
    """This process's renderer, opened on first use (and again after a fork), at `size`."""
    global _RENDERER
    if _RENDERER is None or _RENDERER.closed or _RENDERER.pid != os.getpid():
        _RENDERER = DiceRenderer(size)
    _RENDERER.resize(size)
    return _RENDERER


def _close_before_fork() -> None:
    """A child forked from a process that holds an EGL context hangs when it opens its own:
    close this process's renderer before any os.fork (multiprocessing's "fork" included);
    `renderer()` opens a new one on next use, in the parent and in the child."""
    if _RENDERER is not None and _RENDERER.pid == os.getpid():
        _RENDERER.delete()


os.register_at_fork(before=_close_before_fork)


class DiceRenderer:
    """Renders scene specs to (T, size, size, 3) uint8 frames with spot-light shadows."""

    def __init__(self, size: int):
        self.pid = os.getpid()
        self.size = size
        try:
            self.pr = _import_pyrender()
            self.gl = self.pr.OffscreenRenderer(size, size)
        except Exception as e:
            why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            raise JumpbenchError(f"no working OpenGL for pyrender (EGL) ({why}); install {INSTALL}") from None
        self.room = room_geometry()
        self._reuse_shadow_map()
        self._fixed_draw_order()

    def _reuse_shadow_map(self) -> None:
        """Render the light's shadow map once per scene, not once per view: it depends on the
        scene and the light only, and dominates the cost of a 64x64 frame. (Wraps this
        renderer's own pass; pyrender itself is left unchanged.)"""
        inner = self.gl._renderer._shadow_mapping_pass
        self._shadow_done = None

        def shadow_pass(scene, light_node, flags):
            if self._shadow_done is not light_node:
                inner(scene, light_node, flags)
                self._shadow_done = light_node

        self.gl._renderer._shadow_mapping_pass = shadow_pass

    def _fixed_draw_order(self) -> None:
        """Draw the meshes in the order they were added. pyrender sorts them by their pose's
        distance to the camera, a tie for all of ours (identity poses), so the order fell back
        to a set's, which follows memory addresses: where the die touches the room the
        depth test then picked one or the other, and about 5% of scenes differed by a few
        pixels between two renders. Named nodes ("00-room", "01-die", ...) sort the same way
        every time."""
        inner = self.gl._renderer._sorted_mesh_nodes

        def sorted_mesh_nodes(scene):
            return sorted(inner(scene), key=lambda n: (n.mesh.is_transparent, n.name or ""))

        self.gl._renderer._sorted_mesh_nodes = sorted_mesh_nodes

    def build(self, spec: dict, digits: np.ndarray):
        """A pyrender.Scene of a spec (room, die, spot light, camera node) and its camera node."""
        pr = self.pr
        scene = pr.Scene(ambient_light=np.full(3, 0.25), bg_color=np.array([0.8, 0.82, 0.86, 1.0]))
        scene.add(pr.Mesh([_quads(pr, *self.room, _material(pr, room_atlas(spec)))]), name="00-room")
        corners, normals = geo.die_faces(spec["die_position"], spec["die_yaw"])
        tiles = np.array([divmod(f, 3) for f in range(6)], float)  # (row, column)
        inset = 0.5 / TILE  # keep each face's samples inside its own tile
        uv0 = np.array([[inset, inset], [1 - inset, inset], [1 - inset, 1 - inset], [inset, 1 - inset]])
        # atlas row r is image rows r*TILE.., and pyrender flips images: v = 1 is the top row
        uvs = np.stack([(tiles[:, 1, None] + uv0[None, :, 0]) / 3,
                        1 - (tiles[:, 0, None] + 1 - uv0[None, :, 1]) / 2], axis=-1)
        scene.add(pr.Mesh([_quads(pr, corners, normals, uvs, _material(pr, digit_atlas(digits)))]), name="01-die")
        light = pr.SpotLight(color=np.ones(3), intensity=30.0, innerConeAngle=0.35, outerConeAngle=1.0)
        aim = spec["die_position"] - spec["light_position"]
        pose = geo.camera_pose(np.array([*spec["light_position"], np.arctan2(aim[1], aim[0]),
                                          np.arctan2(aim[2], np.hypot(aim[0], aim[1]))]))
        scene.add(light, pose=pose)
        cam = scene.add(pr.PerspectiveCamera(yfov=geo.YFOV, aspectRatio=1.0, znear=geo.ZNEAR,
                                             zfar=geo.ZFAR))
        return scene, cam

    def render(self, spec: dict, digits: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8, one frame per camera of the spec."""
        scene, cam = self.build(spec, digits)
        flags = self.pr.RenderFlags.SHADOWS_SPOT
        out = np.empty((len(spec["cameras"]), self.size, self.size, 3), np.uint8)
        for t, camera in enumerate(spec["cameras"]):
            scene.set_pose(cam, geo.camera_pose(camera))
            color, _ = self.gl.render(scene, flags=flags)
            out[t] = color  # a copy: pyrender's arrays have negative strides
        return out

    def face_ids(self, spec: dict) -> np.ndarray:
        """(T, H, W) int: the die face (0-5) seen at each pixel, -1 elsewhere; a check of
        face_visibility, not used to write records."""
        pr = self.pr
        scene = pr.Scene()
        corners, normals = geo.die_faces(spec["die_position"], spec["die_yaw"])
        seg = {}
        for f in range(6):
            mat = pr.MetallicRoughnessMaterial(baseColorFactor=np.ones(4))
            prim = _quads(pr, corners[f:f + 1], normals[f:f + 1], np.zeros((1, 4, 2)), mat)
            seg[scene.add(pr.Mesh([prim]), name=f"{f:02d}-face")] = np.full(3, f + 1, np.uint8)
        cam = scene.add(pr.PerspectiveCamera(yfov=geo.YFOV, aspectRatio=1.0, znear=geo.ZNEAR, zfar=geo.ZFAR))
        out = []
        for camera in spec["cameras"]:
            scene.set_pose(cam, geo.camera_pose(camera))
            color, _ = self.gl.render(scene, flags=pr.RenderFlags.SEG, seg_node_map=seg)
            out.append(color[..., 0].astype(int) - 1)
        return np.stack(out)

    @property
    def closed(self) -> bool:
        return self.gl is None

    def resize(self, size: int) -> None:
        if size != self.size:
            self.size = self.gl.viewport_width = self.gl.viewport_height = size

    def delete(self) -> None:
        gl, self.gl = self.gl, None
        if gl is not None:
            gl.delete()
