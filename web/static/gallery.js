// The gallery's only script, no build step: the copy button, and name suggestions in the search box.
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy).textContent.trim();
  const status = button.parentElement.querySelector(".copied");
  try {
    await navigator.clipboard.writeText(text);
  } catch (error) {  // no clipboard permission (plain http, old browser): select it for Ctrl-C
    const range = document.createRange();
    range.selectNodeContents(document.getElementById(button.dataset.copy));
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
    if (status) status.textContent = "Selected: press Ctrl-C to copy";
    return;
  }
  if (status) status.textContent = "Copied!";
  button.dataset.copied = text;
});

const box = document.getElementById("search-box");
const list = document.getElementById("name-suggestions");
let pending = null;
if (box && list) {
  box.addEventListener("input", () => {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      const prefix = box.value.trim().toLowerCase();
      if (!/^[a-z0-9-]{1,32}$/.test(prefix)) { list.replaceChildren(); return; }
      const response = await fetch("/api/autocomplete?q=" + encodeURIComponent(prefix));
      if (!response.ok) return;
      const { names } = await response.json();
      list.replaceChildren(...names.map((name) => Object.assign(document.createElement("option"), { value: name })));
    }, 120);
  });
}
