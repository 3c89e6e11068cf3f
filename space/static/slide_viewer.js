// The Space's slide viewer: OpenSeadragon over the slide's DeepZoom tiles, the field map as a second
// image on top (opacity slider, on/off), and a read-out of the field under the pointer or clicked.
// The page (slide_viewer.py) sets window.SLIDE_VIEW = {id, dzi, overlay, fields, page: viewer.json facts}.
(function () {
  "use strict";
  const view = window.SLIDE_VIEW;
  const facts = view.page;
  const info = document.getElementById("field-info");
  const toggle = document.getElementById("overlay-toggle");
  const opacity = document.getElementById("overlay-opacity");
  window.viewerTimes = {start: performance.now(), open: null, firstFrame: null, tiles: 0};

  const viewer = OpenSeadragon({
    id: "osd",
    prefixUrl: "../slide-viewer/openseadragon/images/",
    tileSources: view.dzi,
    drawer: "canvas",                 // the same picture with or without a GPU (the field edges are drawn in)
    immediateRender: true,            // the level the view needs first, not every coarser one on the way
    maxTilesPerFrame: 16,             // ask for every tile in view at once (default: one new tile per frame)
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    maxZoomPixelRatio: 2,
    crossOriginPolicy: false,
    gestureSettingsMouse: {clickToZoom: false},
  });
  window.slideViewer = viewer;
  let overlay = null;
  let fields = [];

  viewer.addHandler("open", function () {
    window.viewerTimes.open = performance.now();
    const slide = viewer.world.getItemAt(0);
    slide.addHandler("fully-loaded-change", function (event) {
      if (event.fullyLoaded && window.viewerTimes.firstFrame === null) {
        window.viewerTimes.firstFrame = performance.now();
      }
    });
    // The overlay spans the same level-0 extent as the slide: x 0, width 1 in viewport units.
    viewer.addTiledImage({
      tileSource: {type: "image", url: view.overlay, buildPyramid: false},
      x: 0, y: 0, width: 1, opacity: Number(opacity.value),
      success: function (event) { overlay = event.item; applyOverlay(); },
    });
  });
  viewer.addHandler("tile-loaded", function () { window.viewerTimes.tiles += 1; });

  function applyOverlay() {
    if (!overlay) { return; }
    overlay.setOpacity(toggle.checked ? Number(opacity.value) : 0);
    document.body.dataset.overlay = toggle.checked ? "on" : "off";
  }
  toggle.addEventListener("change", applyOverlay);
  opacity.addEventListener("input", applyOverlay);

  fetch(view.fields).then(function (r) { return r.json(); }).then(function (data) { fields = data.fields; });

  function fieldAt(x, y) {
    for (const field of fields) {
      const [fx, fy, fw, fh] = field.box;
      if (x >= fx && x < fx + fw && y >= fy && y < fy + fh) { return field; }
    }
    return null;
  }

  function describe(field) {
    if (!field) { return "No field scored here."; }
    const probs = facts.classes.map(function (c, i) {
      return c.name + " " + (100 * field.p[i]).toFixed(1) + "%";
    }).join(" · ");
    // A refused field names no class: its probabilities are the model's raw output, said as such.
    const what = field.class < 0 ? "Not recognised (" + field.reason + ")" : facts.classes[field.class].name;
    const label = field.class < 0 ? "raw model output, not an answer: " : "";
    return "<b>" + what + "</b><br>" + label + probs + "<br>tissue " + Math.round(100 * field.tissue) +
      "% · field at (" + field.box[0] + ", " + field.box[1] + "), " + field.box[2] + " px";
  }

  function readOut(position) {
    const slide = viewer.world.getItemAt(0);
    if (!slide) { return; }
    const point = slide.viewerElementToImageCoordinates(position);
    info.innerHTML = describe(fieldAt(point.x, point.y));
  }
  new OpenSeadragon.MouseTracker({
    element: viewer.element,
    moveHandler: function (event) { if (!info.dataset.pinned) { readOut(event.position); } },
  });
  viewer.addHandler("canvas-click", function (event) {
    if (!event.quick) { return; }
    info.dataset.pinned = "1";
    readOut(event.position);
  });
  viewer.addHandler("canvas-drag", function () { delete info.dataset.pinned; });
})();
