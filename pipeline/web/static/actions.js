// cityops: the accept / resolve / reject / verify / reopen buttons of a case (team feed and case page).
"use strict";
const caseActions = (() => {
  const {el, api} = cityops;
  const LABEL = {accept: "接单 Accept", resolve: "办结 Resolve", reject: "退回 Reject", verify: "核查通过 Verify",
    reopen: "重新派遣 Reopen", confirm: "核实属实 Confirm", void: "作废 Void"};
  const NEEDS_NOTE = {resolve: "处置情况 What was done", reject: "退回理由 Reason for rejecting",
    reopen: "核查不通过原因 Why it is not fixed", void: "作废理由 Why it is not a problem"};

  // One update_id per rendered button: a double click sends the same id, which the worker applies once.
  function buttons(c, actions, onDone, onError) {
    const box = el("div", {class: "actions"});
    for (const action of actions) {
      const updateId = cityops.uuid();
      const note = NEEDS_NOTE[action]
        ? el("input", {class: "note", name: "note", placeholder: NEEDS_NOTE[action], maxlength: 4000}) : null;
      const btn = el("button", {type: "button", class: "act act-" + action, dataset: {action}}, LABEL[action] || action);
      btn.addEventListener("click", async () => {
        btn.disabled = true;
        try {
          await api("/api/cases/" + encodeURIComponent(c.case_id) + "/actions", {method: "POST",
            body: {action, note: note ? note.value : "", update_id: updateId}});
          btn.textContent = "已发送 Sent";
          if (onDone) onDone(action);
        } catch (e) {
          btn.disabled = false;
          if (onError) onError(e.message);
        }
      });
      box.append(el("span", {class: "action"}, note, btn));
    }
    return box;
  }
  return {buttons};
})();
