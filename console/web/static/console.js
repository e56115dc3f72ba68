// Live updates for the Now view: new alerts and actions arrive as
// server-sent events and are added at the top of their tables. Without
// this script the page still works; a reload shows the same data.
(function () {
  if (document.body.dataset.page !== "now" || !window.EventSource) return;
  var params = new URLSearchParams(location.search);
  if (params.get("page") && params.get("page") !== "0") return;
  params.delete("page");
  var live = document.getElementById("live");
  var es = new EventSource("/events?" + params.toString());
  es.onopen = function () { live.textContent = "live"; };
  es.onerror = function () { live.textContent = "reconnecting…"; };
  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }
  function link(td, id, name) {
    td.textContent = "";
    var a = document.createElement("a");
    a.href = "/container/" + encodeURIComponent(id);
    a.textContent = name || id.slice(0, 12);
    td.appendChild(a);
  }
  function ts(t) { return t.replace("T", " ").replace(/\.\d+Z$/, "Z"); }
  function prepend(tableId, tr) {
    var body = document.querySelector("#" + tableId + " tbody");
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > 200) body.deleteRow(body.rows.length - 1);
  }
  es.addEventListener("alert", function (e) {
    var a = JSON.parse(e.data);
    var tr = document.createElement("tr");
    if (a.Score >= 0.8) tr.className = "high"; else if (a.Score >= 0.5) tr.className = "mid";
    cell(tr, ts(a.Time));
    cell(tr, a.Host);
    link(cell(tr, ""), a.ContainerID, a.ContainerName);
    cell(tr, a.Image);
    cell(tr, a.Score.toFixed(2), "score");
    cell(tr, (a.Reasons || []).map(function (r) { return r.Code + " " + r.Score.toFixed(2) + " " + r.Message + " " + (r.Attack || []).join(" "); }).join("; "));
    cell(tr, a.Process);
    prepend("alerts", tr);
  });
  es.addEventListener("action", function (e) {
    var a = JSON.parse(e.data);
    var tr = document.createElement("tr");
    cell(tr, ts(a.Time));
    cell(tr, a.Host);
    link(cell(tr, ""), a.ContainerID, a.ContainerName);
    cell(tr, a.Type);
    cell(tr, a.Result);
    cell(tr, a.Actor);
    cell(tr, a.Reason);
    prepend("actions", tr);
  });
})();
