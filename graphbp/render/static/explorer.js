/* graphbp explorer: inlined into every generated page. No dependencies, no network.
 *
 * The page holds one Graphviz SVG per view and a JSON table (#gb-data):
 *   nodes[row]            one row per graph node (see graphbp/render/htmldata.py for keys)
 *   views[i].nodes        SVG node id -> rows it draws (several for a collapsed group box)
 *   views[i].clusters     SVG cluster id -> {label, kind, parent, members: SVG node ids}
 *   views[i].collapsed    clusters folded when the page opens
 */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("gb-data").textContent);
  var NODES = DATA.nodes;
  var root = document.documentElement;
  root.classList.remove("no-js");
  root.classList.add("js");

  // Gradient rows derived from each forward row (inverse of provenance).
  var derived = NODES.map(function () { return []; });
  NODES.forEach(function (r, i) {
    (r.pv || []).forEach(function (p) {
      if (p[0] >= 0 && derived[p[0]].indexOf(i) < 0) derived[p[0]].push(i);
    });
  });

  /** Saved forward values the gradient rows derived from ``row`` read. */
  function savedFor(row) {
    var out = [];
    derived[row].forEach(function (g) {
      (NODES[g].in || []).forEach(function (x) {
        if (NODES[x].sv && NODES[x].k !== "grad" && out.indexOf(x) < 0) out.push(x);
      });
    });
    return out;
  }

  function forwardOf(row) {
    var out = [];
    (NODES[row].pv || []).forEach(function (p) { if (p[0] >= 0 && out.indexOf(p[0]) < 0) out.push(p[0]); });
    return out;
  }

  var views = {};
  var order = [];
  var current = null;
  var panel = document.getElementById("panel");
  var tabs = document.getElementById("tabs");
  var search = document.getElementById("search");
  var searchCount = document.getElementById("search-count");
  var search_state = { hits: [], at: -1 };

  DATA.views.forEach(function (vd) {
    var section = document.getElementById("view-" + vd.id);
    if (!section) return;
    var v = { data: vd, section: section, svg: section.querySelector("svg"), svgOf: {}, edges: [],
              collapsed: {}, box: null, home: null, els: {} };
    vd.collapsed.forEach(function (c) { v.collapsed[c] = true; });
    Object.keys(vd.nodes).forEach(function (sid) {
      vd.nodes[sid].forEach(function (r) { v.svgOf[r] = sid; });
    });
    if (v.svg) setupSvg(v);
    views[vd.id] = v;
    order.push(vd.id);
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = vd.label;
    b.setAttribute("role", "tab");
    b.dataset.view = vd.id;
    b.addEventListener("click", function () { show(vd.id); });
    tabs.appendChild(b);
  });

  function setupSvg(v) {
    var svg = v.svg;
    var vb = svg.getAttribute("viewBox").split(/[\s,]+/).map(Number);
    v.home = { x: vb[0], y: vb[1], w: vb[2], h: vb[3] };
    v.box = { x: vb[0], y: vb[1], w: vb[2], h: vb[3] };
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    var prefix = v.data.id + "_";
    svg.querySelectorAll("g.node, g.cluster").forEach(function (el) { v.els[el.id] = el; });
    svg.querySelectorAll("g.edge").forEach(function (el) {
      var t = el.querySelector("title");
      var ends = t ? t.textContent.split("->") : [];
      if (ends.length === 2) v.edges.push({ el: el, tail: prefix + ends[0], head: prefix + ends[1] });
    });
    wirePanZoom(v);
    applyCollapse(v);
  }

  // -- views ---------------------------------------------------------------------------
  function show(id) {
    current = views[id];
    order.forEach(function (k) {
      views[k].section.classList.toggle("active", k === id);
    });
    tabs.querySelectorAll("button").forEach(function (b) {
      b.setAttribute("aria-selected", b.dataset.view === id ? "true" : "false");
    });
    if (current.svg) setBox(current, current.box);
    runSearch();
  }

  // -- pan and zoom (the SVG viewBox is the camera) ---------------------------------------
  function setBox(v, b) {
    v.box = b;
    v.svg.setAttribute("viewBox", [b.x, b.y, b.w, b.h].join(" "));
  }

  function toSvg(v, clientX, clientY) {
    var m = v.svg.getScreenCTM();
    if (!m) return { x: v.box.x, y: v.box.y };
    var p = v.svg.createSVGPoint();
    p.x = clientX;
    p.y = clientY;
    return p.matrixTransform(m.inverse());
  }

  function wirePanZoom(v) {
    var svg = v.svg;
    var drag = null;
    svg.addEventListener("wheel", function (e) {
      e.preventDefault();
      var k = Math.exp((e.deltaY > 0 ? 1 : -1) * Math.min(Math.abs(e.deltaY), 100) / 400);
      var p = toSvg(v, e.clientX, e.clientY);
      var b = v.box;
      setBox(v, { x: p.x - (p.x - b.x) * k, y: p.y - (p.y - b.y) * k, w: b.w * k, h: b.h * k });
    }, { passive: false });
    svg.addEventListener("pointerdown", function (e) {
      if (e.button !== 0) return;
      drag = { x: e.clientX, y: e.clientY, start: toSvg(v, e.clientX, e.clientY), box: v.box, moved: false };
    });
    svg.addEventListener("pointermove", function (e) {
      if (!drag) return;
      if (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 4) {
        drag.moved = true;
        svg.parentNode.classList.add("dragging");
      }
      if (!drag.moved) return;
      var m = svg.getScreenCTM();
      var scale = m ? m.a : 1;
      setBox(v, { x: drag.box.x - (e.clientX - drag.x) / scale, y: drag.box.y - (e.clientY - drag.y) / scale,
                  w: drag.box.w, h: drag.box.h });
    });
    function end(e) {
      if (!drag) return;
      var moved = drag.moved;
      drag = null;
      svg.parentNode.classList.remove("dragging");
      if (!moved && e.type === "pointerup") onClick(v, e.target);
    }
    svg.addEventListener("pointerup", end);
    svg.addEventListener("pointerleave", end);
  }

  function centerOn(v, el) {
    var bb = el.getBBox();
    var m = v.svg.getScreenCTM().inverse().multiply(el.getScreenCTM());
    var p = v.svg.createSVGPoint();
    p.x = bb.x + bb.width / 2;
    p.y = bb.y + bb.height / 2;
    var c = p.matrixTransform(m);
    var w = Math.min(v.box.w, Math.max(v.home.w / 3, 600));
    var h = w * v.box.h / v.box.w;
    setBox(v, { x: c.x - w / 2, y: c.y - h / 2, w: w, h: h });
  }

  document.getElementById("fit").addEventListener("click", function () {
    if (current && current.svg) setBox(current, current.home);
  });

  // -- collapsing clusters in place ----------------------------------------------------------
  /** The outermost folded cluster holding SVG element ``sid`` (null when it is visible). */
  function foldedHolder(v, sid) {
    var best = null;
    Object.keys(v.collapsed).forEach(function (cid) {
      var c = v.data.clusters[cid];
      if (c && c.members.indexOf(sid) >= 0 && (!best || depth(v, cid) < depth(v, best))) best = cid;
    });
    return best;
  }

  function depth(v, cid) {
    var d = 0;
    for (var p = v.data.clusters[cid].parent; p; p = v.data.clusters[p].parent) d += 1;
    return d;
  }

  function clusterHolder(v, cid) {
    var best = null;
    for (var p = v.data.clusters[cid].parent; p; p = v.data.clusters[p].parent) {
      if (v.collapsed[p]) best = p;
    }
    return best;
  }

  function applyCollapse(v) {
    var holder = {};
    Object.keys(v.data.nodes).forEach(function (sid) {
      holder[sid] = foldedHolder(v, sid);
      var el = v.els[sid];
      if (el) el.classList.toggle("gb-hidden", holder[sid] !== null);
    });
    v.edges.forEach(function (e) {
      var h = holder[e.tail];
      e.el.classList.toggle("gb-hidden", !!h && h === holder[e.head]);
    });
    Object.keys(v.data.clusters).forEach(function (cid) {
      var el = v.els[cid];
      if (!el) return;
      var inside = clusterHolder(v, cid) !== null;
      var folded = !!v.collapsed[cid] && !inside;
      el.classList.toggle("gb-hidden", inside);
      el.classList.toggle("gb-collapsed", folded);
      var badge = el.querySelector("text.gb-badge");
      if (folded && !badge) {
        var bb = frameBox(el.querySelector("polygon, path"));
        badge = document.createElementNS("http://www.w3.org/2000/svg", "text");
        badge.setAttribute("class", "gb-badge");
        badge.setAttribute("text-anchor", "middle");
        badge.setAttribute("x", bb.x + bb.width / 2);
        badge.setAttribute("y", bb.y + Math.min(bb.height / 2 + 4, 40));
        var count = v.data.clusters[cid].members.length;
        badge.textContent = "\u25B8 " + count + (count === 1 ? " node" : " nodes") + " \u00B7 click to unfold";
        el.appendChild(badge);
      } else if (!folded && badge) {
        badge.parentNode.removeChild(badge);
      }
    });
  }

  /** Bounding box of a cluster frame from its coordinates (getBBox is empty while the
   *  view is hidden, and folds are applied before a view is first shown). */
  function frameBox(shape) {
    var nums = (shape.getAttribute("points") || shape.getAttribute("d") || "").match(/-?\d+(\.\d+)?/g) || [];
    var xs = [], ys = [];
    for (var i = 0; i + 1 < nums.length; i += 2) { xs.push(+nums[i]); ys.push(+nums[i + 1]); }
    var x0 = Math.min.apply(null, xs), y0 = Math.min.apply(null, ys);
    return { x: x0, y: y0, width: Math.max.apply(null, xs) - x0, height: Math.max.apply(null, ys) - y0 };
  }

  function toggleCluster(v, cid) {
    if (v.collapsed[cid]) delete v.collapsed[cid];
    else v.collapsed[cid] = true;
    applyCollapse(v);
    refreshHighlight(v);
  }

  function unfoldTo(v, sid) {
    var changed = false;
    for (var h = foldedHolder(v, sid); h; h = foldedHolder(v, sid)) {
      delete v.collapsed[h];
      changed = true;
    }
    if (changed) applyCollapse(v);
  }

  // -- selection and provenance -------------------------------------------------------------
  var selection = null; // {view, sid, row}

  function onClick(v, target) {
    var node = target.closest && target.closest("g.node");
    if (node && v.data.nodes[node.id]) {
      select(v, node.id, null);
      return;
    }
    var cluster = target.closest && target.closest("g.cluster");
    if (cluster && v.data.clusters[cluster.id]) {
      var onFrame = v.collapsed[cluster.id] || target.tagName === "text";
      if (onFrame) toggleCluster(v, cluster.id);
      return;
    }
    if (node) { describeOpaque(node); return; }
    clearSelection(v);
  }

  function select(v, sid, row) {
    var rows = sid ? v.data.nodes[sid] : [row];
    if (row === null || row === undefined) row = rows.length === 1 ? rows[0] : null;
    selection = { view: v.data.id, sid: sid, row: row, rows: rows };
    refreshHighlight(v);
    describe(v, selection);
  }

  function clearSelection(v) {
    selection = null;
    refreshHighlight(v);
    panel.innerHTML = "";
    var p = document.createElement("p");
    p.className = "hint";
    p.textContent = "Nothing selected. Click a node.";
    panel.appendChild(p);
  }

  function mark(v, rows, cls) {
    rows.forEach(function (r) {
      var sid = v.svgOf[r];
      if (!sid) return;
      var h = foldedHolder(v, sid);
      var el = v.els[h || sid];
      if (!el) return;
      el.classList.add(h ? "gb-holds" : cls);
      if (!h) el.classList.add("gb-lit");
    });
  }

  function refreshHighlight(v) {
    if (!v.svg) return;
    ["gb-sel", "gb-fwd", "gb-grad", "gb-saved", "gb-holds", "gb-lit", "gb-on"].forEach(function (c) {
      v.svg.querySelectorAll("." + c).forEach(function (el) { el.classList.remove(c); });
    });
    var sel = selection && selection.view === v.data.id ? selection : null;
    v.svg.classList.toggle("gb-focus", !!sel);
    if (!sel) return;
    if (sel.sid && v.els[sel.sid]) v.els[sel.sid].classList.add("gb-sel", "gb-lit");
    else if (sel.row !== null) mark(v, [sel.row], "gb-sel");
    var fwd = [], grads = [], saved = [];
    sel.rows.forEach(function (r) {
      fwd = fwd.concat(forwardOf(r));
      if (NODES[r].k !== "grad") {
        grads = grads.concat(derived[r]);
        saved = saved.concat(savedFor(r));
      }
    });
    mark(v, fwd, "gb-fwd");
    mark(v, grads, "gb-grad");
    mark(v, saved, "gb-saved");
    v.edges.forEach(function (e) {
      var a = v.els[e.tail], b = v.els[e.head];
      if (a && b && a.classList.contains("gb-lit") && b.classList.contains("gb-lit")) e.el.classList.add("gb-on");
    });
  }

  // -- side panel -----------------------------------------------------------------------------
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function rowLink(r) {
    var a = el("a", NODES[r].t + (NODES[r].st ? " (" + NODES[r].st + ")" : ""));
    a.href = "#";
    a.dataset.row = r;
    a.addEventListener("click", function (e) {
      e.preventDefault();
      var sid = current.svgOf[r];
      if (sid) {
        unfoldTo(current, sid);
        select(current, current.data.nodes[sid].length === 1 ? sid : null, r);
        centerOn(current, current.els[sid]);
      } else {
        select(current, null, r);
      }
    });
    return a;
  }

  function list(title, rows) {
    if (!rows.length) return;
    panel.appendChild(el("div", title + " (" + rows.length + ")", "section"));
    var ul = el("ul");
    rows.slice(0, 200).forEach(function (r) {
      var li = el("li");
      li.appendChild(rowLink(r));
      if (NODES[r].why) li.appendChild(el("span", " \u2014 " + NODES[r].why));
      ul.appendChild(li);
    });
    panel.appendChild(ul);
  }

  function describe(v, sel) {
    panel.innerHTML = "";
    if (sel.row === null) {
      var rows = sel.rows;
      panel.appendChild(el("h3", (v.els[sel.sid].querySelector("text") || {}).textContent || "group"));
      panel.appendChild(el("p", "A collapsed group of " + rows.length + " nodes (merged to keep the layout "
        + "small; render with a larger max_nodes to draw them one by one)."));
      list("members", rows);
      return;
    }
    var r = NODES[sel.row];
    var h = el("h3", r.t + " ");
    h.appendChild(el("span", r.k, "kind kind-" + r.k));
    panel.appendChild(h);
    var t = el("table");
    function add(k, val, code) {
      if (val === undefined || val === null || val === "") return;
      var tr = el("tr");
      tr.appendChild(el("th", k));
      var td = el("td");
      td.appendChild(code ? el("code", String(val)) : document.createTextNode(String(val)));
      tr.appendChild(td);
      t.appendChild(tr);
    }
    add("op", r.op + (r.d ? " (" + r.d + ")" : ""));
    if (r.fu) add("fused", r.fu.join(" \u2192 "));
    add("type", r.ty, true);
    add("shape", r.sh);
    add("bytes", r.b);
    add("FLOPs", r.f || "0");
    add("step", r.st);
    add("scope", r.sc);
    if (r.sv) add("saved", "kept from the forward for the backward");
    if (r.out !== undefined) add("output", r.out);
    if (r.up !== undefined) add("updates", NODES[r.up].t);
    add("built at", r.at);
    if (r.src) add("line", r.src, true);
    panel.appendChild(t);
    if (r.k === "grad") {
      panel.appendChild(el("div", "chain rule", "section"));
      panel.appendChild(el("p", r.why));
      var fwd = forwardOf(sel.row);
      list("from forward op", fwd);
      fwd.forEach(function (f) {
        if (NODES[f].src) {
          var p = el("p");
          p.appendChild(el("span", "your line " + NODES[f].at + ": "));
          p.appendChild(el("code", NODES[f].src));
          panel.appendChild(p);
        }
        if (!current.svgOf[f]) panel.appendChild(el("p", "(" + NODES[f].t + " is not drawn in this view: see Joint)", "hint"));
      });
    } else {
      list("gradient nodes derived from it", derived[sel.row]);
      list("saved activations its rule reads", savedFor(sel.row));
    }
    if (r.in) list("inputs", r.in);
  }

  function describeOpaque(node) {
    panel.innerHTML = "";
    panel.appendChild(el("h3", (node.querySelector("text") || {}).textContent || node.id));
    var tip = node.querySelector("a") ;
    var title = tip && (tip.getAttribute("xlink:title") || tip.getAttribute("title"));
    if (title) panel.appendChild(el("pre", title));
  }

  // -- search -------------------------------------------------------------------------------
  function matches(v, q) {
    var hits = [];
    if (!v.svg) return hits;
    var ids = Object.keys(v.data.nodes);
    if (ids.length) {
      ids.forEach(function (sid) {
        var ok = v.data.nodes[sid].some(function (r) {
          var n = NODES[r];
          return (n.t + " " + n.op + " " + (n.d || "")).toLowerCase().indexOf(q) >= 0;
        });
        if (ok) hits.push(sid);
      });
    } else {
      v.svg.querySelectorAll("g.node").forEach(function (n) {
        if (n.textContent.toLowerCase().indexOf(q) >= 0) hits.push(n.id);
      });
    }
    return hits;
  }

  function runSearch() {
    if (!current) return;
    var q = search.value.trim().toLowerCase();
    order.forEach(function (k) {
      if (views[k].svg) views[k].svg.querySelectorAll(".gb-match").forEach(function (e) { e.classList.remove("gb-match"); });
    });
    search_state = { hits: q ? matches(current, q) : [], at: -1 };
    search_state.hits.forEach(function (sid) {
      var h = foldedHolder(current, sid);
      var e = current.els[h || sid];
      if (e) e.classList.add(h ? "gb-holds" : "gb-match");
    });
    searchCount.textContent = q ? search_state.hits.length + " match" + (search_state.hits.length === 1 ? "" : "es") : "";
  }

  search.addEventListener("input", runSearch);
  search.addEventListener("keydown", function (e) {
    if (e.key !== "Enter" || !search_state.hits.length) return;
    e.preventDefault();
    search_state.at = (search_state.at + 1) % search_state.hits.length;
    var sid = search_state.hits[search_state.at];
    unfoldTo(current, sid);
    current.els[sid].classList.add("gb-match");
    if (current.data.nodes[sid]) select(current, sid, null);
    centerOn(current, current.els[sid]);
    searchCount.textContent = (search_state.at + 1) + " / " + search_state.hits.length;
  });
  document.addEventListener("keydown", function (e) {
    if (e.key === "/" && document.activeElement !== search) { e.preventDefault(); search.focus(); }
    if (e.key === "Escape" && current) clearSelection(current);
  });

  // -- equations: typeset each align block of the LaTeX source with the bundled KaTeX ---------
  // KaTeX's MathML output gives a tagged row of an align an empty <mtd class="mml-eqn-num">
  // (katex.css would number it with a counter) and drops the \tag text, so the step names
  // (F3, B12) would vanish: write each row's tag into its cell, in order.
  function numberRows(box, latex) {
    var tags = [], re = /\\tag\{([^}]*)\}/g, t;
    while ((t = re.exec(latex)) !== null) tags.push(t[1]);
    var cells = box.querySelectorAll("mtd.mml-eqn-num");
    if (cells.length !== tags.length) return;
    cells.forEach(function (cell, i) {
      var text = document.createElementNS("http://www.w3.org/1998/Math/MathML", "mtext");
      text.textContent = "(" + tags[i] + ")";
      cell.appendChild(text);
    });
  }
  function typeset() {
    var src = document.getElementById("latex-source");
    var out = document.getElementById("equations");
    if (!src || !out || !window.katex) return;
    var text = src.textContent;
    var re = /\\paragraph\{([^}]*)\}\s*(\\begin\{align\}[\s\S]*?\\end\{align\})?/g;
    var m;
    while ((m = re.exec(text)) !== null) {
      out.appendChild(el("h3", m[1]));
      if (!m[2]) { out.appendChild(el("p", "(empty)")); continue; }
      var box = el("div", null, "math");
      window.katex.render(m[2], box, { displayMode: true, output: "mathml", throwOnError: false, strict: "ignore" });
      numberRows(box, m[2]);
      out.appendChild(box);
    }
    document.getElementById("latex-details").open = false;
  }
  typeset();

  window.graphbpExplorer = { views: views, nodes: NODES, show: show };
  if (order.length) show(order[0]);
})();
