"""The media engine: tracks on a room's frame bus, the audio mixer, the compositor, encoders.

A frame's path, top to bottom::

    edge --(packets or frames)--> Track --subscriptions--> AudioMixer / Compositor
         --> Encoder (one per composition and encoding) --> packet sinks (recorders, pushes)
"""
