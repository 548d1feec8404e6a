"""How models read and write their inputs and outputs: text as tokens (a byte-level BPE
tokenizer), chats as prompts, melodies as note events, four-part music as piano rolls,
and the files they travel in (MIDI, PNG). Training prepares data with them and serving
answers with them, so both read the same definitions."""
