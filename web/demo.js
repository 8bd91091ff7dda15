// The demo page: send the chosen or dropped photo to POST classify, show the top 5 as bars.
"use strict";

(() => {
  const input = document.getElementById("photo");
  const drop = document.getElementById("drop");
  const errorBox = document.getElementById("error");
  const result = document.getElementById("result");
  const preview = document.getElementById("preview");
  const caption = document.getElementById("caption");
  const status = document.getElementById("status");
  const list = document.getElementById("predictions");
  let previewUrl = null;
  let pending = null; // the request for the photo on show: a newer choice cancels it

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function fail(message) {
    status.textContent = "";
    result.hidden = true; // no half answer: the message says it all
    showError(message);
  }

  function showPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    caption.textContent = file.name;
    result.hidden = false;
  }

  function percent(probability) {
    return (probability * 100).toFixed(probability >= 0.1 ? 1 : 2) + "%";
  }

  function showPredictions(predictions) {
    list.replaceChildren(...predictions.map((p) => {
      const item = document.createElement("li");
      item.className = "prediction";
      item.dataset.index = p.index;
      item.dataset.probability = p.probability;
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = p.label;
      const value = document.createElement("span");
      value.className = "percent";
      value.textContent = percent(p.probability);
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = (p.probability * 100) + "%";
      bar.append(fill);
      item.append(label, value, bar);
      return item;
    }));
  }

  async function readAnswer(response) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }

  async function classify(file) {
    if (pending) pending.abort(); // its late answer must not land under this photo
    const request = (pending = new AbortController());
    showError("");
    list.replaceChildren();
    showPreview(file);
    status.textContent = "Classifying…";
    const form = new FormData();
    form.append("image", file, file.name);
    let response;
    try {
      response = await fetch("classify?topk=5", {
        method: "POST", body: form, headers: { Accept: "application/json" }, signal: request.signal,
      });
    } catch (error) {
      if (request.signal.aborted) return;
      fail(`The service could not be reached (${error.message}).`);
      return;
    }
    const answer = await readAnswer(response);
    if (request.signal.aborted) return;
    if (!response.ok || !answer || !answer.predictions) {
      const message = answer && answer.error ? answer.error.message : "";
      fail(message || `The service answered ${response.status} ${response.statusText}.`);
      return;
    }
    showPredictions(answer.predictions);
    status.textContent = `${answer.model} · ${Math.round(answer.timing_ms.total)} ms`;
  }

  function first(files) {
    if (files && files.length) classify(files[0]);
  }

  input.addEventListener("change", () => {
    first(input.files);
    input.value = ""; // choosing the same photo again classifies it again
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    event.stopPropagation(); // the window's handler below would classify it a second time
    drop.classList.remove("dragging");
    first(event.dataTransfer.files);
  });
  // A photo dropped beside the box should not make the browser leave the page to show it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    first(event.dataTransfer.files);
  });
})();
