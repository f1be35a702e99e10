// The review page's choices: kept in localStorage, shown on the cards, downloaded as a decisions CSV.
(function () {
  "use strict";
  var body = document.body, KEY = body.getAttribute("data-storage-key");
  var category = body.getAttribute("data-category");
  var state = {};
  try { state = JSON.parse(localStorage.getItem(KEY) || "{}") || {}; } catch (e) { state = {}; }
  function save() { try { localStorage.setItem(KEY, JSON.stringify(state)); } catch (e) {} }
  function cards() { return Array.prototype.slice.call(document.querySelectorAll("article.cand")); }
  var reviewer = document.getElementById("reviewer");
  if (state.__reviewer) reviewer.value = state.__reviewer;
  reviewer.addEventListener("change", function () { state.__reviewer = reviewer.value.trim(); save(); });

  function show(card) {
    var d = state[card.getAttribute("data-candidate-id")];
    card.classList.remove("done-accept", "done-reject");
    if (d && d.verdict) card.classList.add("done-" + d.verdict);
    card.querySelector(".when").textContent = d && d.verdict ? "decided " + d.at : "";
  }
  function progress() {
    var all = cards(), n = all.filter(function (c) {
      var d = state[c.getAttribute("data-candidate-id")]; return d && d.verdict; }).length;
    document.getElementById("progress").textContent = n + " of " + all.length + " decided";
  }
  function record(card) {
    var cid = card.getAttribute("data-candidate-id");
    var checked = card.querySelector("input[type=radio]:checked");
    state[cid] = { verdict: checked ? checked.value : "", note: card.querySelector(".note").value,
                   at: new Date().toISOString() };
    save(); show(card); progress();
  }
  cards().forEach(function (card) {
    var d = state[card.getAttribute("data-candidate-id")];
    if (d) {
      card.querySelectorAll("input[type=radio]").forEach(function (r) { r.checked = r.value === d.verdict; });
      card.querySelector(".note").value = d.note || "";
    }
    show(card);
    card.querySelectorAll("input").forEach(function (inp) {
      inp.addEventListener("change", function () { record(card); });
    });
  });
  progress();

  function toggle(img) { img.classList.toggle("blurred"); }
  document.addEventListener("click", function (ev) {
    var t = ev.target; if (t.matches && t.matches("img.unsafe")) toggle(t);
  });
  document.addEventListener("keydown", function (ev) {
    var t = ev.target;
    if ((ev.key === "Enter" || ev.key === " ") && t.matches && t.matches("img.unsafe")) { ev.preventDefault(); toggle(t); }
  });
  var all = document.getElementById("reveal-all");
  if (all) all.addEventListener("change", function () {
    document.querySelectorAll("img.unsafe").forEach(function (img) { img.classList.toggle("blurred", !all.checked); });
  });

  // The decisions as CSV text: one row per candidate with a verdict, in page order.
  window.reviewCsv = function () {
    var who = reviewer.value.trim(), lines = ["candidate_id,category,reviewer,decided_at,verdict,note"];
    cards().forEach(function (card) {
      var cid = card.getAttribute("data-candidate-id"), d = state[cid];
      if (!d || !d.verdict) return;
      lines.push([cid, card.getAttribute("data-category"), who, d.at, d.verdict, d.note].map(reviewCsvCell).join(","));
    });
    return lines.join("\r\n") + "\r\n";
  };
  document.getElementById("download").addEventListener("click", function () {
    var who = reviewer.value.trim(), msg = document.getElementById("message");
    if (!who) { msg.textContent = "Enter your name first."; reviewer.focus(); return; }
    var pending = cards().filter(function (c) {
      var d = state[c.getAttribute("data-candidate-id")]; return d && !d.verdict && d.note; }).length;
    var blob = new Blob([window.reviewCsv()], { type: "text/csv;charset=utf-8" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "decisions_" + category + "_" + who.replace(/[^A-Za-z0-9_-]+/g, "-") + "_" +
                 new Date().toISOString().replace(/[:.]/g, "-") + ".csv";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 10000);
    msg.textContent = "Downloaded. Import it with: python -m sp_assets.review import " + a.download +
      (pending ? " (" + pending + " notes without a verdict were left out)" : "");
  });
  document.getElementById("clear").addEventListener("click", function () {
    if (!confirm("Forget every choice made on this page (in this browser)?")) return;
    var who = state.__reviewer; state = { __reviewer: who }; save();
    cards().forEach(function (card) {
      card.querySelectorAll("input[type=radio]").forEach(function (r) { r.checked = false; });
      card.querySelector(".note").value = ""; show(card);
    });
    progress();
  });
})();
