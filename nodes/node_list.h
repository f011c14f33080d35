/* The registry of node types: one SD_NODE(Name) line per node type, each defined in nodes/ as
 * `const sd_node_desc sd_node_<Name>`. Keep the lines sorted; core/registry.c expands them. */
SD_NODE(EmptyLatentImage)
SD_NODE(LoadImage)
SD_NODE(LoadImageMask)
SD_NODE(PreviewImage)
SD_NODE(PrimitiveBoolean)
SD_NODE(PrimitiveFloat)
SD_NODE(PrimitiveInt)
SD_NODE(PrimitiveString)
SD_NODE(PrimitiveStringMultiline)
SD_NODE(SaveImage)
